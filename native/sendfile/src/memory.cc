/*
 * The one piece of berth-sendfile that is not N-API: V8's low-memory
 * notification, which N-API does not offer. It runs a full garbage collection
 * in V8's memory-reducing mode (compacting, releasing empty pages, shrinking
 * the young generation), as V8 does for a tab in the background, where a
 * plain gc() only collects. trim() in sendfile.c calls it on the main thread.
 * v8::Isolate::LowMemoryNotification is public V8 API, present in every Node
 * this addon builds for.
 */
#include <v8.h>

extern "C" void berth_low_memory_notification(void) {
  v8::Isolate* isolate = v8::Isolate::GetCurrent();
  if (isolate != nullptr) isolate->LowMemoryNotification();
}
