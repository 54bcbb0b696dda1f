/*
 * berth-sendfile: sendfile(2) from a file to a TCP socket, off the event loop.
 *
 * start(socketFd, fileFd, offset, length, timeoutMs, callback) returns a handle;
 * cancel(handle) stops a transfer early. callback(errno, sent) runs on the main
 * thread once the transfer ends (errno 0: all `length` bytes were sent).
 *
 * Each transfer runs on its own small thread, not on libuv's threadpool: a slow
 * client would otherwise hold a pool thread (and the DNS lookups and file reads
 * queued behind it) for as long as it reads. The thread works on a dup of the
 * socket fd, so the socket stays valid even if Node closes its own fd meanwhile,
 * and waits for room with poll(2) on that dup, leaving libuv's epoll alone.
 * cancel() shuts the socket down, which wakes the thread at once. The dup is
 * closed on the main thread when the callback runs; the file fd is the caller's.
 *
 * trim() gives back memory a burst of work left behind: a memory-reducing full
 * GC (V8's low-memory notification, memory.cc), then the malloc heap's free
 * pages to the kernel (glibc's malloc_trim(0); skipped where the C library has
 * none). It returns whether malloc_trim released anything. It blocks the main
 * thread for tens of milliseconds: berth calls it once start-up is over and
 * when the daemon goes idle after work, never per request (docs/performance.md).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <node_api.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct {
  int out_fd;  /* a dup of the socket: ours, closed in complete() */
  int in_fd;   /* the caller's */
  int64_t offset;
  int64_t remaining;
  int64_t sent;
  int timeout_ms;
  int err;
  atomic_int cancelled;
  int finished; /* main thread only */
  int refs;     /* main thread only: the JS handle and the running transfer */
  napi_threadsafe_function tsfn;
} transfer_t;

/* At most this much per sendfile call: the kernel stops earlier when the socket buffer is full. */
#define CHUNK ((size_t)1 << 30)
#define POLL_SLICE_MS 1000

static void unref(transfer_t* t) {
  if (--t->refs == 0) free(t);
}

static void* run(void* arg) {
  transfer_t* t = arg;
  int idle_ms = 0;
  while (t->remaining > 0) {
    if (atomic_load(&t->cancelled)) {
      t->err = ECANCELED;
      break;
    }
    off_t off = (off_t)t->offset;
    size_t want = t->remaining > (int64_t)CHUNK ? CHUNK : (size_t)t->remaining;
    ssize_t n = sendfile(t->out_fd, t->in_fd, &off, want);
    if (n > 0) {
      t->offset += n;
      t->remaining -= n;
      t->sent += n;
      idle_ms = 0;
      continue;
    }
    if (n == 0) {
      /* The file ends before `length`: never pad, never hang. */
      t->err = ENODATA;
      break;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      t->err = errno;
      break;
    }
    struct pollfd p = {.fd = t->out_fd, .events = POLLOUT, .revents = 0};
    int slice = t->timeout_ms - idle_ms < POLL_SLICE_MS ? t->timeout_ms - idle_ms : POLL_SLICE_MS;
    if (slice < 1) slice = 1;
    int r = poll(&p, 1, slice);
    if (r < 0) {
      if (errno == EINTR) continue;
      t->err = errno;
      break;
    }
    if (r == 0) {
      idle_ms += slice;
      if (idle_ms >= t->timeout_ms) {
        t->err = ETIMEDOUT;
        break;
      }
      continue;
    }
    if (p.revents & POLLNVAL) {
      t->err = EBADF;
      break;
    }
    if ((p.revents & (POLLERR | POLLHUP)) && !(p.revents & POLLOUT)) {
      t->err = EPIPE;
      break;
    }
  }
  napi_call_threadsafe_function(t->tsfn, t, napi_tsfn_blocking);
  napi_release_threadsafe_function(t->tsfn, napi_tsfn_release);
  return NULL;
}

/* On the main thread, once the transfer thread is done. */
static void complete(napi_env env, napi_value js_cb, void* context, void* data) {
  (void)context;
  transfer_t* t = data;
  close(t->out_fd);
  t->out_fd = -1;
  t->finished = 1;
  int err = t->err;
  double sent = (double)t->sent;
  unref(t);
  if (env == NULL || js_cb == NULL) return;
  napi_value undefined, argv[2];
  napi_get_undefined(env, &undefined);
  napi_create_int32(env, err, &argv[0]);
  napi_create_double(env, sent, &argv[1]);
  napi_call_function(env, undefined, js_cb, 2, argv, NULL);
}

static void finalize_handle(napi_env env, void* data, void* hint) {
  (void)env;
  (void)hint;
  unref((transfer_t*)data);
}

static napi_value throw_errno(napi_env env, const char* what, int err) {
  napi_value msg, code, error;
  napi_create_string_utf8(env, what, NAPI_AUTO_LENGTH, &msg);
  napi_create_int32(env, err, &code);
  napi_create_error(env, NULL, msg, &error);
  napi_set_named_property(env, error, "errno", code);
  napi_throw(env, error);
  return NULL;
}

#define CHECK(call)                                          \
  do {                                                       \
    if ((call) != napi_ok) {                                 \
      napi_throw_error(env, NULL, "berth-sendfile: " #call); \
      return NULL;                                           \
    }                                                        \
  } while (0)

static napi_value start(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 6) {
    napi_throw_type_error(env, NULL, "start(socketFd, fileFd, offset, length, timeoutMs, callback)");
    return NULL;
  }
  int32_t sock, file, timeout;
  int64_t offset, length;
  CHECK(napi_get_value_int32(env, argv[0], &sock));
  CHECK(napi_get_value_int32(env, argv[1], &file));
  CHECK(napi_get_value_int64(env, argv[2], &offset));
  CHECK(napi_get_value_int64(env, argv[3], &length));
  CHECK(napi_get_value_int32(env, argv[4], &timeout));
  if (sock < 0 || file < 0 || offset < 0 || length < 0 || timeout < 1) {
    napi_throw_range_error(env, NULL, "berth-sendfile: bad argument");
    return NULL;
  }
  transfer_t* t = calloc(1, sizeof *t);
  if (!t) return throw_errno(env, "berth-sendfile: out of memory", ENOMEM);
  t->in_fd = file;
  t->offset = offset;
  t->remaining = length;
  t->timeout_ms = timeout;
  atomic_init(&t->cancelled, 0);
  t->out_fd = fcntl(sock, F_DUPFD_CLOEXEC, 0);
  if (t->out_fd < 0) {
    int err = errno;
    free(t);
    return throw_errno(env, "berth-sendfile: dup", err);
  }
  napi_value name;
  CHECK(napi_create_string_utf8(env, "berth-sendfile", NAPI_AUTO_LENGTH, &name));
  if (napi_create_threadsafe_function(env, argv[5], NULL, name, 0, 1, NULL, NULL, NULL, complete, &t->tsfn) != napi_ok) {
    close(t->out_fd);
    free(t);
    napi_throw_error(env, NULL, "berth-sendfile: napi_create_threadsafe_function");
    return NULL;
  }
  t->refs = 2;
  napi_value handle;
  if (napi_create_external(env, t, finalize_handle, NULL, &handle) != napi_ok) {
    t->refs = 1;
    napi_release_threadsafe_function(t->tsfn, napi_tsfn_abort);
    close(t->out_fd);
    free(t);
    napi_throw_error(env, NULL, "berth-sendfile: napi_create_external");
    return NULL;
  }
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, 256 * 1024);
  pthread_t thread;
  int rc = pthread_create(&thread, &attr, run, t);
  pthread_attr_destroy(&attr);
  if (rc != 0) {
    /* Nothing was sent: the caller falls back to the copying path. */
    napi_release_threadsafe_function(t->tsfn, napi_tsfn_abort);
    close(t->out_fd);
    t->out_fd = -1;
    t->finished = 1;
    t->refs = 1; /* the handle's finalizer frees it */
    return throw_errno(env, "berth-sendfile: pthread_create", rc);
  }
  return handle;
}

static napi_value cancel(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  void* data = NULL;
  if (argc < 1 || napi_get_value_external(env, argv[0], &data) != napi_ok || !data) {
    napi_throw_type_error(env, NULL, "cancel(handle)");
    return NULL;
  }
  transfer_t* t = data;
  if (!t->finished && !atomic_exchange(&t->cancelled, 1)) {
    /* Wakes poll() and fails sendfile() at once. out_fd is open until complete() runs here, on this thread. */
    shutdown(t->out_fd, SHUT_RDWR);
  }
  return NULL;
}

void berth_low_memory_notification(void); /* memory.cc */

static napi_value trim(napi_env env, napi_callback_info info) {
  (void)info;
  berth_low_memory_notification();
  int released = 0;
#ifdef __GLIBC__
  released = malloc_trim(0);
#endif
  napi_value result;
  CHECK(napi_get_boolean(env, released != 0, &result));
  return result;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"start", NULL, start, NULL, NULL, NULL, napi_default, NULL},
      {"cancel", NULL, cancel, NULL, NULL, NULL, napi_default, NULL},
      {"trim", NULL, trim, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
