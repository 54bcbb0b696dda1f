/*
 * berth-sendfile's blob sink: the fill's hash and file writes on a thread of
 * their own (docs/performance.md, "The fill's native sink").
 *
 * sinkOpen(fd, onEvent) returns a handle; the sink writes on a dup of `fd`
 * (ours, closed when the sink's thread ends), so the caller may close its fd
 * at any time and no write can land in a file that later got that number.
 * sinkWrite(handle, chunk) copies the chunk into the sink's 1 MiB blocks and
 * returns at once: the socket read it came from is garbage as soon as the
 * caller drops it. The thread takes every block queued so far as one batch,
 * hashes it (SHA-256, OpenSSL's EVP API as linked into node) and pwritev()s it
 * at the end of what is in the file, so the digest is taken over exactly the
 * bytes written, in the order written. After each batch it tells the main
 * thread: onEvent(1, bytesOnDisk) for a batch in the file, onEvent(2, errno,
 * batchBytes) for a batch that failed; the thread then waits for
 * sinkResume(handle, retry): true writes the same batch again at the same
 * offset (after the caller made room on ENOSPC), false ends the sink (every
 * later write is dropped). sinkDigest(handle) returns the hex SHA-256 of every
 * byte written; the caller asks only when everything it wrote is on disk (the
 * thread is idle), and at most once. sinkClose(handle) ends the thread (queued
 * bytes are dropped); a sink whose handle is collected is closed too.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <node_api.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define BLOCK ((size_t)1 << 20)
/* Blocks kept for reuse; a fill in full flow needs a handful. */
#define SPARE_MAX 8
#define IOV_MAX_BATCH 64

enum { EV_FLUSHED = 1, EV_ERROR = 2 };

typedef struct block {
  struct block* next;
  size_t len;
  unsigned char data[];
} block_t;

typedef struct {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int fd;                 /* our dup; closed by the thread as it ends */
  block_t* head;          /* queued, not yet taken by the thread */
  block_t* tail;
  block_t* spare;         /* free blocks */
  int spare_n;
  int64_t on_disk;        /* thread writes, under mu */
  int stop;               /* close asked */
  int busy;               /* the thread holds a batch (hashing or writing it) */
  int waiting;            /* a failed batch waits for sinkResume */
  int decision;           /* 0 none, 1 retry, 2 give up */
  int dead;               /* gave up or stopped: writes are dropped */
  int refs;               /* under mu: the JS handle and the thread */
  EVP_MD_CTX* md;
  int digested;
  napi_threadsafe_function tsfn;
} sink_t;

typedef struct {
  int kind;
  double a, b;
} event_t;

static void sink_free(sink_t* s) {
  for (block_t* b = s->head; b;) {
    block_t* n = b->next;
    free(b);
    b = n;
  }
  for (block_t* b = s->spare; b;) {
    block_t* n = b->next;
    free(b);
    b = n;
  }
  if (s->md) EVP_MD_CTX_free(s->md);
  pthread_mutex_destroy(&s->mu);
  pthread_cond_destroy(&s->cv);
  free(s);
}

/* Drops a reference; the caller holds mu, which this releases. */
static void sink_unref_unlock(sink_t* s) {
  int last = --s->refs == 0;
  pthread_mutex_unlock(&s->mu);
  if (last) sink_free(s);
}

static void post(sink_t* s, int kind, double a, double b) {
  event_t* e = malloc(sizeof *e);
  if (!e) return; /* the caller's drain then waits for the next event; out of memory is fatal soon anyway */
  e->kind = kind;
  e->a = a;
  e->b = b;
  if (napi_call_threadsafe_function(s->tsfn, e, napi_tsfn_blocking) != napi_ok) free(e);
}

static void call_js(napi_env env, napi_value js_cb, void* context, void* data) {
  (void)context;
  event_t* e = data;
  if (env != NULL && js_cb != NULL) {
    napi_value undefined, argv[3];
    napi_get_undefined(env, &undefined);
    napi_create_int32(env, e->kind, &argv[0]);
    napi_create_double(env, e->a, &argv[1]);
    napi_create_double(env, e->b, &argv[2]);
    napi_call_function(env, undefined, js_cb, 3, argv, NULL);
  }
  free(e);
}

/* Writes the batch at `at`; 0 or an errno. */
static int write_batch(int fd, block_t* batch, int64_t at) {
  block_t* b = batch;
  size_t skip = 0; /* bytes of b already written */
  while (b) {
    struct iovec iov[IOV_MAX_BATCH];
    int n = 0;
    block_t* c = b;
    size_t cskip = skip;
    while (c && n < IOV_MAX_BATCH) {
      iov[n].iov_base = c->data + cskip;
      iov[n].iov_len = c->len - cskip;
      n++;
      cskip = 0;
      c = c->next;
    }
    ssize_t w = pwritev(fd, iov, n, (off_t)at);
    if (w < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (w == 0) return EIO;
    at += w;
    /* Advance past what was written (a short write continues where it stopped). */
    size_t left = (size_t)w;
    while (b && left > 0) {
      size_t rest = b->len - skip;
      if (left >= rest) {
        left -= rest;
        b = b->next;
        skip = 0;
      } else {
        skip += left;
        left = 0;
      }
    }
  }
  return 0;
}

static void* run(void* arg) {
  sink_t* s = arg;
  pthread_mutex_lock(&s->mu);
  for (;;) {
    while (!s->head && !s->stop) pthread_cond_wait(&s->cv, &s->mu);
    if (s->stop || s->dead) break;
    if (s->head == s->tail && s->tail->len < BLOCK / 2) {
      /* Less than half a block: wait up to 2 ms for more, so a fill in full flow writes (and reports) in larger batches. */
      struct timespec until;
      clock_gettime(CLOCK_REALTIME, &until);
      until.tv_nsec += 2 * 1000 * 1000;
      if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
      }
      while (!s->stop && s->head == s->tail && s->tail->len < BLOCK / 2) {
        if (pthread_cond_timedwait(&s->cv, &s->mu, &until) == ETIMEDOUT) break;
      }
      if (s->stop || s->dead) break;
    }
    block_t* batch = s->head;
    s->head = s->tail = NULL;
    s->busy = 1;
    int64_t at = s->on_disk;
    pthread_mutex_unlock(&s->mu);

    size_t n = 0;
    for (block_t* b = batch; b; b = b->next) {
      EVP_DigestUpdate(s->md, b->data, b->len);
      n += b->len;
    }
    int err;
    for (;;) {
      err = write_batch(s->fd, batch, at);
      if (err == 0) break;
      /* waiting before the event: the answer may come at once. */
      pthread_mutex_lock(&s->mu);
      s->waiting = 1;
      s->decision = 0;
      pthread_mutex_unlock(&s->mu);
      post(s, EV_ERROR, (double)err, (double)n);
      pthread_mutex_lock(&s->mu);
      while (s->decision == 0 && !s->stop) pthread_cond_wait(&s->cv, &s->mu);
      int retry = s->decision == 1 && !s->stop;
      s->waiting = 0;
      s->decision = 0;
      if (!retry) s->dead = 1;
      pthread_mutex_unlock(&s->mu);
      if (!retry) break;
    }

    pthread_mutex_lock(&s->mu);
    for (block_t* b = batch; b;) {
      block_t* next = b->next;
      if (s->spare_n < SPARE_MAX) {
        b->next = s->spare;
        s->spare = b;
        s->spare_n++;
      } else {
        free(b);
      }
      b = next;
    }
    s->busy = 0;
    if (err != 0) break;
    s->on_disk = at + (int64_t)n;
    double on_disk = (double)s->on_disk;
    pthread_mutex_unlock(&s->mu);
    post(s, EV_FLUSHED, on_disk, 0);
    pthread_mutex_lock(&s->mu);
  }
  s->dead = 1;
  close(s->fd);
  s->fd = -1;
  napi_threadsafe_function tsfn = s->tsfn;
  sink_unref_unlock(s);
  napi_release_threadsafe_function(tsfn, napi_tsfn_release);
  return NULL;
}

static napi_value throw_errno(napi_env env, const char* what, int err) {
  char msg[160];
  snprintf(msg, sizeof msg, "berth-sendfile: %s: %s", what, strerror(err));
  napi_value m, code, error;
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &m);
  napi_create_int32(env, err, &code);
  napi_create_error(env, NULL, m, &error);
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

static void stop(sink_t* s) {
  pthread_mutex_lock(&s->mu);
  s->stop = 1;
  pthread_cond_signal(&s->cv);
  pthread_mutex_unlock(&s->mu);
}

static void finalize_handle(napi_env env, void* data, void* hint) {
  (void)env;
  (void)hint;
  sink_t* s = data;
  stop(s);
  pthread_mutex_lock(&s->mu);
  sink_unref_unlock(s);
}

static sink_t* get_sink(napi_env env, napi_value v) {
  void* data = NULL;
  if (napi_get_value_external(env, v, &data) != napi_ok || !data) {
    napi_throw_type_error(env, NULL, "berth-sendfile: not a sink");
    return NULL;
  }
  return data;
}

static napi_value sink_open(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int32_t fd;
  if (argc < 2 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0) {
    napi_throw_type_error(env, NULL, "sinkOpen(fd, onEvent)");
    return NULL;
  }
  sink_t* s = calloc(1, sizeof *s);
  if (!s) return throw_errno(env, "sinkOpen", ENOMEM);
  pthread_mutex_init(&s->mu, NULL);
  pthread_cond_init(&s->cv, NULL);
  s->md = EVP_MD_CTX_new();
  if (!s->md || EVP_DigestInit_ex(s->md, EVP_sha256(), NULL) != 1) {
    sink_free(s);
    napi_throw_error(env, NULL, "berth-sendfile: SHA-256 is not available");
    return NULL;
  }
  s->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (s->fd < 0) {
    int err = errno;
    sink_free(s);
    return throw_errno(env, "sinkOpen: dup", err);
  }
  napi_value name;
  CHECK(napi_create_string_utf8(env, "berth-sink", NAPI_AUTO_LENGTH, &name));
  if (napi_create_threadsafe_function(env, argv[1], NULL, name, 0, 1, NULL, NULL, NULL, call_js, &s->tsfn) != napi_ok) {
    close(s->fd);
    sink_free(s);
    napi_throw_error(env, NULL, "berth-sendfile: napi_create_threadsafe_function");
    return NULL;
  }
  s->refs = 2;
  napi_value handle;
  if (napi_create_external(env, s, finalize_handle, NULL, &handle) != napi_ok) {
    napi_release_threadsafe_function(s->tsfn, napi_tsfn_abort);
    close(s->fd);
    sink_free(s);
    napi_throw_error(env, NULL, "berth-sendfile: napi_create_external");
    return NULL;
  }
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, 256 * 1024);
  pthread_t thread;
  int rc = pthread_create(&thread, &attr, run, s);
  pthread_attr_destroy(&attr);
  if (rc != 0) {
    napi_release_threadsafe_function(s->tsfn, napi_tsfn_abort);
    close(s->fd);
    s->fd = -1;
    s->dead = 1;
    s->refs = 1; /* the handle's finalizer frees it */
    return throw_errno(env, "sinkOpen: pthread_create", rc);
  }
  return handle;
}

/* sinkWrite(handle, chunk): false when the sink is closed or gave up (nothing was taken). */
static napi_value sink_write(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 2) {
    napi_throw_type_error(env, NULL, "sinkWrite(handle, chunk)");
    return NULL;
  }
  sink_t* s = get_sink(env, argv[0]);
  if (!s) return NULL;
  napi_typedarray_type type;
  size_t len;
  void* data;
  napi_value ab;
  size_t off;
  if (napi_get_typedarray_info(env, argv[1], &type, &len, &data, &ab, &off) != napi_ok || type != napi_uint8_array) {
    napi_throw_type_error(env, NULL, "sinkWrite: chunk must be a Uint8Array");
    return NULL;
  }
  const unsigned char* p = data;
  pthread_mutex_lock(&s->mu);
  int ok = !s->dead && !s->stop;
  while (ok && len > 0) {
    block_t* t = s->tail;
    if (!t || t->len == BLOCK) {
      block_t* b = s->spare;
      if (b) {
        s->spare = b->next;
        s->spare_n--;
      } else {
        b = malloc(sizeof *b + BLOCK);
        if (!b) {
          pthread_mutex_unlock(&s->mu);
          return throw_errno(env, "sinkWrite", ENOMEM);
        }
      }
      b->next = NULL;
      b->len = 0;
      if (t) t->next = b;
      else s->head = b;
      s->tail = t = b;
    }
    size_t n = BLOCK - t->len < len ? BLOCK - t->len : len;
    memcpy(t->data + t->len, p, n);
    t->len += n;
    p += n;
    len -= n;
  }
  if (ok) pthread_cond_signal(&s->cv);
  pthread_mutex_unlock(&s->mu);
  napi_value result;
  CHECK(napi_get_boolean(env, ok, &result));
  return result;
}

static napi_value sink_resume(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 2) {
    napi_throw_type_error(env, NULL, "sinkResume(handle, retry)");
    return NULL;
  }
  sink_t* s = get_sink(env, argv[0]);
  if (!s) return NULL;
  bool retry = false;
  CHECK(napi_get_value_bool(env, argv[1], &retry));
  pthread_mutex_lock(&s->mu);
  if (s->waiting) {
    s->decision = retry ? 1 : 2;
    pthread_cond_signal(&s->cv);
  }
  pthread_mutex_unlock(&s->mu);
  return NULL;
}

static napi_value sink_digest(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1) {
    napi_throw_type_error(env, NULL, "sinkDigest(handle)");
    return NULL;
  }
  sink_t* s = get_sink(env, argv[0]);
  if (!s) return NULL;
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int mdlen = 0;
  pthread_mutex_lock(&s->mu);
  /* Everything written is on disk and the thread waits for more: it does not touch the hash now. */
  int ok = !s->head && !s->busy && !s->waiting && !s->dead && !s->stop && !s->digested;
  if (ok) {
    s->digested = 1;
    s->dead = 1; /* nothing may be written after the digest */
    ok = EVP_DigestFinal_ex(s->md, md, &mdlen) == 1;
  }
  pthread_mutex_unlock(&s->mu);
  if (!ok) {
    napi_throw_error(env, NULL, "berth-sendfile: sinkDigest with bytes still queued, after a failure or twice");
    return NULL;
  }
  char hex[2 * EVP_MAX_MD_SIZE + 1];
  for (unsigned int i = 0; i < mdlen; i++) snprintf(hex + 2 * i, 3, "%02x", md[i]);
  napi_value result;
  CHECK(napi_create_string_utf8(env, hex, 2 * mdlen, &result));
  return result;
}

static napi_value sink_close(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1) {
    napi_throw_type_error(env, NULL, "sinkClose(handle)");
    return NULL;
  }
  sink_t* s = get_sink(env, argv[0]);
  if (!s) return NULL;
  stop(s);
  return NULL;
}

void berth_sink_init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"sinkOpen", NULL, sink_open, NULL, NULL, NULL, napi_default, NULL},
      {"sinkWrite", NULL, sink_write, NULL, NULL, NULL, napi_default, NULL},
      {"sinkResume", NULL, sink_resume, NULL, NULL, NULL, napi_default, NULL},
      {"sinkDigest", NULL, sink_digest, NULL, NULL, NULL, napi_default, NULL},
      {"sinkClose", NULL, sink_close, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}
