/*
 * peermsg from C: log in to a relay, send a user a command, a buffer and a file, print the
 * progress and the results, as the SDK's sendCmd, sendBuffer, sendFile and their callbacks.
 *
 *   example RELAY USER PEER FILE        send the three, exit 0 if all three are delivered
 *   example --commands N RELAY USER PEER  send N commands (256 at a time), print commands/s
 *
 * Build (from crates/peermsg-ffi, after `cargo build -p peermsg-ffi --release`):
 *   cc c/example.c -Iinclude -L../../target/release -lpeermsg_ffi \
 *      -Wl,-rpath,../../target/release -o example
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "peermsg.h"

/* Commands waiting for their results at a time, at most (--commands). */
#define WINDOW 256

/* What the callbacks share with main, under one lock. */
typedef struct app {
    pthread_mutex_t lock;
    pthread_cond_t changed;
    int results, failures;
    uint64_t in_flight;
    int state;
    int quiet; /* commands mode: no line per result */
} app;

static void told(app *a, int code) {
    pthread_mutex_lock(&a->lock);
    a->results++;
    if (code != PM_NOERR) a->failures++;
    if (a->in_flight) a->in_flight--;
    /* The sender waits for a quarter of the window to free (fewer wake-ups), or the end. */
    if (a->in_flight == 0 || a->in_flight == WINDOW * 3 / 4) pthread_cond_broadcast(&a->changed);
    pthread_mutex_unlock(&a->lock);
}

/* The callbacks: all come on the client's callback thread, one at a time. */
static void on_state(void *ctx, int32_t state, int32_t code) {
    app *a = ctx;
    static const char *names[] = {"disconnected", "connected", "reconnecting"};
    printf("connection: %s (%s)\n", state >= 0 && state <= 2 ? names[state] : "?", pm_error_name(code));
    pthread_mutex_lock(&a->lock);
    a->state = state;
    pthread_cond_broadcast(&a->changed);
    pthread_mutex_unlock(&a->lock);
}

static void on_cmd_result(void *ctx, uint64_t id, int32_t code, uint64_t cookie) {
    (void)cookie;
    app *a = ctx;
    if (!a->quiet) printf("command %" PRIu64 ": %s\n", id, pm_error_name(code));
    told(a, code);
}

static void on_buffer_result(void *ctx, uint64_t id, int32_t code, uint64_t cookie) {
    printf("buffer %" PRIu64 " (cookie %" PRIu64 "): %s\n", id, cookie, pm_error_name(code));
    told(ctx, code);
}

static void on_file_result(void *ctx, uint64_t id, const char *name, int32_t code, uint64_t cookie) {
    printf("file %" PRIu64 " %s (cookie %" PRIu64 "): %s\n", id, name, cookie, pm_error_name(code));
    told(ctx, code);
}

static void on_progress(void *ctx, uint64_t id, uint64_t sent, uint64_t total, uint64_t cookie) {
    (void)ctx;
    (void)cookie;
    printf("progress %" PRIu64 ": %" PRIu64 " of %" PRIu64 " bytes\n", id, sent, total);
}

static void on_cmd(void *ctx, const char *from, const uint8_t *data, size_t len) {
    (void)ctx;
    printf("command from %s: %.*s\n", from, (int)len, (const char *)data);
}

static void on_buffer(void *ctx, const char *from, const uint8_t *data, size_t len) {
    (void)ctx;
    (void)data;
    printf("buffer from %s: %zu bytes\n", from, len);
}

static void on_file(void *ctx, const char *from, const char *tmp_file, const char *name) {
    (void)ctx;
    printf("file from %s: %s, kept at %s\n", from, name, tmp_file);
}

static double seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* Waits until `results` results have come. */
static void wait_results(app *a, int results) {
    pthread_mutex_lock(&a->lock);
    while (a->results < results) pthread_cond_wait(&a->changed, &a->lock);
    pthread_mutex_unlock(&a->lock);
}

static int fail(const char *what, int code) {
    fprintf(stderr, "%s: %d %s\n", what, code, pm_error_name(code));
    return 1;
}

/* N commands, at most WINDOW waiting for their results at a time. */
static int commands(pm_client *client, app *a, const char *peer, long n) {
    a->quiet = 1;
    double start = seconds();
    for (long i = 0; i < n; i++) {
        pthread_mutex_lock(&a->lock);
        while (a->in_flight >= WINDOW) pthread_cond_wait(&a->changed, &a->lock);
        a->in_flight++;
        pthread_mutex_unlock(&a->lock);
        uint64_t id;
        int rc = pm_send_cmd(client, peer, (const uint8_t *)"ping", 4, (uint64_t)i, &id);
        if (rc != PM_NOERR) return fail("pm_send_cmd", rc);
    }
    wait_results(a, (int)n);
    double took = seconds() - start;
    printf("commands: %ld in %.3f s: %.0f/s, %d failed\n", n, took, (double)n / took, a->failures);
    return a->failures != 0;
}

int main(int argc, char **argv) {
    long n = 0;
    if (argc == 6 && strcmp(argv[1], "--commands") == 0) {
        n = atol(argv[2]);
        argv += 2;
        argc -= 2;
    } else if (argc != 5) {
        fprintf(stderr, "usage: %s RELAY USER PEER FILE\n       %s --commands N RELAY USER PEER\n",
                argv[0], argv[0]);
        return 2;
    }
    const char *relay = argv[1], *user = argv[2], *peer = argv[3], *file = argv[4];

    app a = {.lock = PTHREAD_MUTEX_INITIALIZER, .changed = PTHREAD_COND_INITIALIZER};
    pm_client *client;
    int rc = pm_client_new(&client);
    if (rc != PM_NOERR) return fail("pm_client_new", rc);
    pm_callbacks cb = {
        .ctx = &a,
        .connection_state = on_state,
        .send_cmd_rlst = on_cmd_result,
        .send_buffer_rlst = on_buffer_result,
        .send_file_rlst = on_file_result,
        .send_progress = on_progress,
        .notify_cmd_data = on_cmd,
        .notify_buffer_data = on_buffer,
        .notify_file_data = on_file,
    };
    pm_set_callbacks(client, &cb);
    rc = pm_login(client, relay, user, NULL, NULL);
    if (rc != PM_NOERR) {
        pm_client_free(client);
        return fail("pm_login", rc);
    }

    int failed;
    if (n > 0) {
        failed = commands(client, &a, peer, n);
    } else {
        uint64_t id;
        const char *hello = "hello from C";
        rc = pm_send_cmd(client, peer, (const uint8_t *)hello, strlen(hello), 1, &id);
        if (rc != PM_NOERR) return fail("pm_send_cmd", rc);
        size_t size = 4u << 20;
        uint8_t *buffer = malloc(size);
        for (size_t i = 0; i < size; i++) buffer[i] = (uint8_t)(i * 7u + 3u);
        rc = pm_send_buffer(client, peer, buffer, size, 2, &id);
        free(buffer); /* copied by pm_send_buffer */
        if (rc != PM_NOERR) return fail("pm_send_buffer", rc);
        rc = pm_send_file(client, peer, file, 3, &id);
        if (rc != PM_NOERR) return fail("pm_send_file", rc);
        wait_results(&a, 3);
        failed = a.failures != 0;
    }
    /* Results and events still waiting are told before this returns. */
    rc = pm_client_free(client);
    if (rc != PM_NOERR) return fail("pm_client_free", rc);
    printf(failed ? "not all delivered\n" : "all delivered\n");
    return failed;
}
