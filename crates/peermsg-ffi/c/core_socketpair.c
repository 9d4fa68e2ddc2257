/*
 * The sans-IO core from C over a socketpair: alice and bob, each a pm_core, on a direct
 * link (no relay). This program owns the transport and the clock, as firmware would: it
 * writes what pm_core_poll_transmit gives, hands what it reads to pm_core_handle_input,
 * polls events and timers. It sends a command, a buffer and a file (its bytes supplied on
 * PM_EVENT_FILE_READ), cancels a buffer, cuts the link part way through a buffer and makes
 * it again when the core says (the buffer goes on from what bob holds; a command sent while
 * the link was down is delivered once), and checks what arrives, byte for byte, and what
 * bad arguments give. Exit 0 when every check holds; otherwise it names the one that failed.
 *
 * With --sealed both ends seal end to end (pm_core_set_sealing, keys trusted on first use):
 * every check above holds the same, each end learns the other's key (PM_EVENT_PEER_KEY), and
 * no text or byte pattern of what alice sends appears in what she writes to the socket.
 *
 * Build: cc core_socketpair.c -I../include ../../../target/debug/libpeermsg_ffi.a -lpthread -ldl -lm
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "peermsg.h"

#define CHECK(cond, ...)                                                    \
    do {                                                                    \
        if (!(cond)) {                                                      \
            fprintf(stderr, "FAILED %s:%d: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                   \
            fprintf(stderr, "\n");                                          \
            exit(1);                                                        \
        }                                                                   \
    } while (0)

static uint64_t now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000u + (uint64_t)t.tv_nsec / 1000u;
}

/* The file alice sends, made on the fly: byte i is a function of i. */
#define FILE_SIZE (3u * 1024u * 1024u + 17u)
static uint8_t file_byte(uint64_t i) { return (uint8_t)((i * 31u) ^ (i >> 11)); }

#define BUFFER_SIZE (1024u * 1024u + 5u)

/* --sealed: both ends seal; each secret is 32 bytes of its seed byte. */
static int sealed = 0;
static uint8_t buffer_byte(uint64_t i) { return (uint8_t)(i * 7u + 3u); }

/* One end: its core, its socket, and what the checks look at. */
typedef struct end {
    const char *name;
    pm_core *core;
    int fd;
    uint8_t out[16384];
    size_t out_len, out_at;
    int logged_in, peer_logged_in, closed, ended, shut;
    /* Results of our sends, by kind; the last progress of each. */
    int cmd_result, buffer_result, file_result, cancelled_result, resumed_result, away_result;
    int waiting, reconnected;
    uint64_t resumed_at, received;
    uint64_t buffer_progress, file_progress;
    int progress_went_back;
    /* What came in. */
    int cmds;
    char cmd[64];
    size_t expect_buffer; /* the length of the next buffer */
    int buffers;
    int buffer_ok;
    uint64_t file_offset;
    int file_bytes_ok, files, offers, failed_receives;
    char offer_name[64];
    /* Sealed: the last peer key told, its PM_KEY_* status; what was written, its last bytes. */
    uint8_t peer_key[32];
    int peer_keys;
    uint64_t peer_key_status;
    char written_tail[32];
    int leaked;
} end;

static void make_end(end *e, const char *name, int fd, uint8_t seed_byte) {
    memset(e, 0, sizeof *e);
    e->name = name;
    e->fd = fd;
    e->cmd_result = e->buffer_result = e->file_result = e->cancelled_result = -1;
    e->resumed_result = e->away_result = -1;
    e->expect_buffer = BUFFER_SIZE;
    e->file_bytes_ok = 1;
    uint8_t seed[16];
    memset(seed, seed_byte, sizeof seed);
    /* Reconnecting on: sends wait for a new link and go on. */
    int rc = pm_core_new(name, (const uint8_t *)"token", 5, seed, now_us(), 1, &e->core);
    CHECK(rc == PM_NOERR, "pm_core_new(%s) = %d", name, rc);
    if (sealed) {
        uint8_t secret[32], entropy[32];
        memset(secret, seed_byte, sizeof secret);
        memset(entropy, seed_byte + 100, sizeof entropy); /* a real driver draws random bytes */
        rc = pm_core_set_sealing(e->core, secret, entropy, 1);
        CHECK(rc == PM_NOERR, "pm_core_set_sealing(%s) = %d", name, rc);
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

static uint64_t buffer_send = 0, file_send = 0, cancel_send = 0;
static uint64_t resumed_send = UINT64_MAX, away_send = UINT64_MAX;

/* One event of `e`'s core. */
static void on_event(end *e, const pm_event *ev) {
    switch (ev->kind) {
    case PM_EVENT_LOGIN_RESULT:
        CHECK(ev->code == PM_NOERR, "%s login: %d", e->name, ev->code);
        e->logged_in = 1;
        break;
    case PM_EVENT_PEER_LOGIN:
        CHECK(ev->from != NULL, "peer login without a name");
        e->peer_logged_in = 1;
        break;
    case PM_EVENT_SEND_RESULT:
        if (ev->id == away_send) e->away_result = ev->code;
        else if (ev->id == resumed_send) e->resumed_result = ev->code;
        else if (ev->send_kind == PM_SEND_CMD) e->cmd_result = ev->code;
        else if (ev->id == cancel_send) e->cancelled_result = ev->code;
        else if (ev->send_kind == PM_SEND_BUFFER) e->buffer_result = ev->code;
        else if (ev->send_kind == PM_SEND_FILE) e->file_result = ev->code;
        CHECK(ev->cookie == ev->id * 10, "%s: cookie %llu for send %llu", e->name,
              (unsigned long long)ev->cookie, (unsigned long long)ev->id);
        break;
    case PM_EVENT_SEND_WAITING:
        CHECK(ev->code == PM_CONNECTIONLOST || ev->code == PM_OFFLINE, "waiting: %d", ev->code);
        CHECK(ev->total > ev->offset, "a deadline after its start");
        e->waiting++;
        break;
    case PM_EVENT_RECONNECTED:
        e->reconnected++;
        break;
    case PM_EVENT_RESUMED:
        if (ev->id == resumed_send) e->resumed_at = ev->offset;
        break;
    case PM_EVENT_RECEIVE_PROGRESS:
        e->received = ev->offset;
        break;
    case PM_EVENT_PROGRESS: {
        uint64_t *last = ev->id == file_send ? &e->file_progress : &e->buffer_progress;
        if (ev->id != file_send && ev->id != buffer_send) break;
        if (ev->offset < *last || ev->offset > ev->total) e->progress_went_back = 1;
        *last = ev->offset;
        break;
    }
    case PM_EVENT_FILE_READ: {
        /* The caller's storage: here, the pattern. */
        CHECK(ev->id == file_send, "read for send %llu", (unsigned long long)ev->id);
        CHECK(ev->offset + ev->total <= FILE_SIZE, "read past the end");
        uint8_t *bytes = malloc(ev->total ? ev->total : 1);
        for (uint64_t i = 0; i < ev->total; i++) bytes[i] = file_byte(ev->offset + i);
        int rc = pm_core_supply_file_data(e->core, ev->id, ev->offset, bytes, ev->total);
        free(bytes);
        CHECK(rc == PM_NOERR, "supply: %d", rc);
        break;
    }
    case PM_EVENT_PEER_KEY:
        CHECK(ev->from != NULL && ev->data != NULL && ev->data_len == 32, "a peer key without its key");
        memcpy(e->peer_key, ev->data, 32);
        e->peer_key_status = ev->offset;
        e->peer_keys++;
        break;
    case PM_EVENT_REFUSED:
        CHECK(0, "%s refused a message from %s: %d", e->name, ev->from, ev->code);
        break;
    case PM_EVENT_CMD_RECEIVED:
        CHECK(strcmp(ev->from, "alice") == 0, "command from %s", ev->from);
        CHECK(ev->data_len < sizeof e->cmd, "command of %zu bytes", ev->data_len);
        memcpy(e->cmd, ev->data, ev->data_len);
        e->cmd[ev->data_len] = 0;
        e->cmds++;
        break;
    case PM_EVENT_OFFER:
        e->offers++;
        if (ev->send_kind == PM_SEND_FILE) {
            CHECK(ev->total == FILE_SIZE, "offer of %llu bytes", (unsigned long long)ev->total);
            snprintf(e->offer_name, sizeof e->offer_name, "%s", ev->name);
        }
        break;
    case PM_EVENT_BUFFER_RECEIVED:
        e->buffers++;
        e->buffer_ok = ev->data_len == e->expect_buffer;
        for (size_t i = 0; e->buffer_ok && i < ev->data_len; i++)
            if (ev->data[i] != buffer_byte(i)) e->buffer_ok = 0;
        break;
    case PM_EVENT_FILE_DATA:
        /* In order, from where the last piece ended. */
        if (ev->offset != e->file_offset) e->file_bytes_ok = 0;
        for (size_t i = 0; i < ev->data_len; i++)
            if (ev->data[i] != file_byte(ev->offset + i)) e->file_bytes_ok = 0;
        e->file_offset = ev->offset + ev->data_len;
        break;
    case PM_EVENT_FILE_RECEIVED: {
        CHECK(ev->total == FILE_SIZE && e->file_offset == FILE_SIZE, "file of %llu bytes",
              (unsigned long long)e->file_offset);
        e->files++;
        /* Kept: only now is the sender told. */
        int rc = pm_core_accept_delivery(e->core, ev->id);
        CHECK(rc == PM_NOERR, "accept: %d", rc);
        break;
    }
    case PM_EVENT_RECEIVE_FAILED:
        e->failed_receives++;
        break;
    case PM_EVENT_CLOSED:
        e->closed = 1;
        break;
    default:
        break;
    }
}

/* Takes `e`'s events. */
static void take_events(end *e) {
    pm_event ev;
    for (;;) {
        CHECK(pm_core_poll_event(e->core, &ev) == PM_NOERR, "poll_event");
        if (ev.kind == PM_EVENT_NONE) break;
        on_event(e, &ev);
    }
}

/* Whether what `e` wrote shows the command's text or a run of the buffer's or file's
 * bytes (16 in a row): it must not, sealed. The last bytes of each write are kept, so a
 * text cut across two writes is seen too. */
static void look_for_leaks(end *e, const uint8_t *bytes, size_t n) {
    static const char *text = "hello from C";
    uint8_t seen[32 + 16384];
    size_t tail = strlen(e->written_tail), len = n < 16384 ? n : 16384;
    memcpy(seen, e->written_tail, tail);
    memcpy(seen + tail, bytes, len);
    size_t all = tail + len;
    for (size_t i = 0; i + 16 <= all; i++) {
        if (memcmp(seen + i, text, strlen(text)) == 0 && i + strlen(text) <= all) e->leaked = 1;
        int buffer_run = 1;
        for (size_t j = 1; j < 16 && buffer_run; j++)
            buffer_run = seen[i + j] == (uint8_t)(seen[i + j - 1] + 7u);
        if (buffer_run) e->leaked = 1;
    }
    /* Keep up to 31 bytes (as text: stop at a zero byte, which neither pattern needs). */
    size_t keep = all < 31 ? all : 31;
    memcpy(e->written_tail, seen + all - keep, keep);
    e->written_tail[keep] = 0;
    e->written_tail[strnlen(e->written_tail, keep)] = 0;
}

/* Moves what can move for `e`: writes, reads, events, timers. */
static void pump(end *e) {
    for (;;) {
        if (e->out_at == e->out_len) {
            e->out_at = e->out_len = 0;
            int rc = pm_core_poll_transmit(e->core, e->out, sizeof e->out, &e->out_len);
            CHECK(rc == PM_NOERR, "poll_transmit: %d", rc);
            if (e->out_len == 0) break;
        }
        ssize_t n = write(e->fd, e->out + e->out_at, e->out_len - e->out_at);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        CHECK(n >= 0, "write: %s", strerror(errno));
        look_for_leaks(e, e->out + e->out_at, (size_t)n);
        e->out_at += (size_t)n;
    }
    uint8_t in[65536];
    ssize_t n;
    while (!e->ended && (n = read(e->fd, in, sizeof in)) >= 0) {
        if (n == 0) {
            /* The other end closed its side: the transport is over. */
            e->ended = 1;
            CHECK(pm_core_handle_disconnect(e->core, now_us()) == PM_NOERR, "disconnect");
            break;
        }
        int rc = pm_core_handle_input(e->core, now_us(), in, (size_t)n);
        CHECK(rc == PM_NOERR, "handle_input: %d", rc);
    }
    uint64_t at;
    CHECK(pm_core_poll_timeout(e->core, &at) == PM_NOERR, "poll_timeout");
    if (at != PM_NEVER && at <= now_us()) pm_core_handle_timeout(e->core, now_us());
    take_events(e);
    if (e->closed && e->out_at == e->out_len && !e->shut) {
        /* Over, and its last bytes written: end our side, as a driver closes its socket. */
        e->shut = 1;
        shutdown(e->fd, SHUT_WR);
    }
}

/* The link is lost: both ends are told, and the socketpair goes. */
static void cut(end *a, end *b) {
    close(a->fd);
    close(b->fd);
    a->out_len = a->out_at = b->out_len = b->out_at = 0;
    CHECK(pm_core_handle_disconnect(a->core, now_us()) == PM_NOERR, "disconnect");
    CHECK(pm_core_handle_disconnect(b->core, now_us()) == PM_NOERR, "disconnect");
    take_events(a);
    take_events(b);
}

/* A new link once both cores ask for one (pm_core_poll_redial), as a dialler would. */
static void dial_again(end *a, end *b) {
    uint64_t at_a, at_b;
    CHECK(pm_core_poll_redial(a->core, &at_a) == PM_NOERR && at_a != PM_NEVER, "alice redials");
    CHECK(pm_core_poll_redial(b->core, &at_b) == PM_NOERR && at_b != PM_NEVER, "bob redials");
    uint64_t at = at_a > at_b ? at_a : at_b;
    CHECK(at < now_us() + 10u * 1000000u, "redial within 10 s");
    while (now_us() < at) usleep(1000);
    int fds[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, fds) == 0, "socketpair");
    a->fd = fds[0];
    b->fd = fds[1];
    fcntl(a->fd, F_SETFL, fcntl(a->fd, F_GETFL) | O_NONBLOCK);
    fcntl(b->fd, F_SETFL, fcntl(b->fd, F_GETFL) | O_NONBLOCK);
    CHECK(pm_core_connected(a->core, now_us()) == PM_NOERR, "connected");
    CHECK(pm_core_connected(b->core, now_us()) == PM_NOERR, "connected");
}

/* Pumps both ends until `done` holds, for at most 20 s. */
#define RUN_UNTIL(a, b, done)                                          \
    do {                                                               \
        uint64_t until = now_us() + 20u * 1000000u;                    \
        while (!(done)) {                                              \
            CHECK(now_us() < until, "timed out waiting for %s", #done); \
            pump(a);                                                   \
            pump(b);                                                   \
        }                                                              \
    } while (0)

static void bad_arguments(pm_core *core) {
    uint64_t id = 0;
    const char bad_utf8[] = {(char)0xff, (char)0xfe, 0};
    CHECK(pm_core_send_cmd(NULL, now_us(), "bob", (const uint8_t *)"x", 1, 0, &id) == PM_PARAM_ERR,
          "NULL core");
    CHECK(pm_core_send_cmd(core, now_us(), NULL, (const uint8_t *)"x", 1, 0, &id) == PM_PARAM_ERR,
          "NULL target");
    CHECK(pm_core_send_cmd(core, now_us(), bad_utf8, (const uint8_t *)"x", 1, 0, &id) == PM_PARAM_ERR,
          "target not UTF-8");
    CHECK(pm_core_send_cmd(core, now_us(), "bob", NULL, 5, 0, &id) == PM_PARAM_ERR, "NULL data");
    CHECK(pm_core_send_cmd(core, now_us(), "bob", (const uint8_t *)"x", 1, 0, NULL) == PM_PARAM_ERR,
          "NULL id");
    CHECK(pm_core_send_file(core, now_us(), "bob", "f", 1, NULL, 0, &id) == PM_PARAM_ERR, "NULL key");
    CHECK(pm_core_new(NULL, NULL, 0, (const uint8_t *)"0123456789abcdef", 0, 0, (pm_core **)&id) ==
              PM_PARAM_ERR,
          "NULL user");
    CHECK(pm_core_cancel_send(core, 987654, 0) == PM_TRANSID_INVALID, "cancel of nothing");
    CHECK(pm_core_poll_event(core, NULL) == PM_PARAM_ERR, "NULL event");
    size_t len;
    uint8_t b[4];
    CHECK(pm_core_poll_transmit(core, NULL, 4, &len) == PM_PARAM_ERR, "NULL buffer");
    CHECK(pm_core_poll_transmit(core, b, 4, NULL) == PM_PARAM_ERR, "NULL length");
    CHECK(strcmp(pm_error_name(PM_OFFLINE), "OFFLINE") == 0, "error name");
    CHECK(strcmp(pm_error_name(-1), "UNKNOWN") == 0, "unknown error name");
    pm_core_free(NULL);
}

int main(int argc, char **argv) {
    sealed = argc > 1 && strcmp(argv[1], "--sealed") == 0;
    int fds[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, fds) == 0, "socketpair: %s", strerror(errno));
    end alice, bob;
    make_end(&alice, "alice", fds[0], 1);
    make_end(&bob, "bob", fds[1], 2);

    RUN_UNTIL(&alice, &bob, alice.logged_in && bob.logged_in && alice.peer_logged_in);
    printf("logged in on a direct link\n");
    bad_arguments(alice.core);

    uint64_t id;
    const char *cmd = "hello from C";
    /* The cookie of every send is its id times ten, checked on its result. */
    CHECK(pm_core_send_cmd(alice.core, now_us(), "bob", (const uint8_t *)cmd, strlen(cmd), 0, &id) ==
              PM_NOERR,
          "send_cmd");
    CHECK(id == 0, "command send id %llu", (unsigned long long)id);
    RUN_UNTIL(&alice, &bob, alice.cmd_result != -1 && bob.cmds == 1);
    CHECK(alice.cmd_result == PM_NOERR, "command result %d", alice.cmd_result);
    CHECK(strcmp(bob.cmd, cmd) == 0, "bob got '%s'", bob.cmd);
    printf("command: delivered, result NOERR\n");

    uint8_t *buffer = malloc(BUFFER_SIZE);
    for (size_t i = 0; i < BUFFER_SIZE; i++) buffer[i] = buffer_byte(i);
    CHECK(pm_core_send_buffer(alice.core, now_us(), "bob", buffer, BUFFER_SIZE, 10, &buffer_send) ==
              PM_NOERR,
          "send_buffer");
    free(buffer); /* the core copied it */
    CHECK(buffer_send == 1, "buffer send id %llu", (unsigned long long)buffer_send);
    RUN_UNTIL(&alice, &bob, alice.buffer_result != -1 && bob.buffers == 1);
    CHECK(alice.buffer_result == PM_NOERR, "buffer result %d", alice.buffer_result);
    CHECK(bob.buffer_ok, "bob's buffer differs");
    CHECK(alice.buffer_progress == BUFFER_SIZE && !alice.progress_went_back, "buffer progress %llu",
          (unsigned long long)alice.buffer_progress);
    printf("buffer: %u bytes delivered and equal, progress to the end, result NOERR\n", BUFFER_SIZE);

    uint8_t key[16];
    memset(key, 7, sizeof key);
    CHECK(pm_core_send_file(alice.core, now_us(), "bob", "report.bin", FILE_SIZE, key, 20, &file_send) ==
              PM_NOERR,
          "send_file");
    CHECK(file_send == 2, "file send id %llu", (unsigned long long)file_send);
    RUN_UNTIL(&alice, &bob, alice.file_result != -1);
    CHECK(alice.file_result == PM_NOERR, "file result %d", alice.file_result);
    CHECK(bob.files == 1 && bob.file_bytes_ok, "bob's file differs");
    CHECK(strcmp(bob.offer_name, "report.bin") == 0, "offered as '%s'", bob.offer_name);
    CHECK(alice.file_progress == FILE_SIZE && !alice.progress_went_back, "file progress");
    printf("file: %u bytes supplied on request, delivered in order and equal, result NOERR\n", FILE_SIZE);

    /* A buffer cancelled before it went out. */
    uint8_t big[64 * 1024];
    memset(big, 1, sizeof big);
    CHECK(pm_core_send_buffer(alice.core, now_us(), "bob", big, sizeof big, 30, &cancel_send) == PM_NOERR,
          "send_buffer to cancel");
    CHECK(pm_core_cancel_send(alice.core, cancel_send, 0) == PM_NOERR, "cancel");
    RUN_UNTIL(&alice, &bob, alice.cancelled_result != -1);
    CHECK(alice.cancelled_result == PM_CANCELLED, "cancelled send's result %d", alice.cancelled_result);
    CHECK(pm_core_cancel_send(alice.core, cancel_send, 0) == PM_TRANSID_INVALID, "cancel again");
    printf("cancel: result CANCELLED, a second cancel TRANSID_INVALID\n");

    /* The link is cut part way through an 8 MiB buffer, then made again. */
    size_t big_size = 8u << 20;
    uint8_t *big_buffer = malloc(big_size);
    for (size_t i = 0; i < big_size; i++) big_buffer[i] = buffer_byte(i);
    bob.expect_buffer = big_size;
    bob.received = 0;
    CHECK(pm_core_send_buffer(alice.core, now_us(), "bob", big_buffer, big_size, 40, &resumed_send) ==
              PM_NOERR,
          "send_buffer to cut");
    free(big_buffer);
    RUN_UNTIL(&alice, &bob, bob.received >= (1u << 20));
    CHECK(bob.received < big_size, "bob had it all before the cut");
    cut(&alice, &bob);
    CHECK(alice.waiting == 1, "alice's buffer waits (%d)", alice.waiting);
    CHECK(pm_core_is_logged_in(alice.core) == 0, "logged in with no link");
    /* A command while the link is down waits for the next one. */
    CHECK(pm_core_send_cmd(alice.core, now_us(), "bob", (const uint8_t *)"while away", 10, 50,
                           &away_send) == PM_NOERR,
          "send_cmd while away");
    dial_again(&alice, &bob);
    RUN_UNTIL(&alice, &bob, alice.resumed_result != -1 && alice.away_result != -1 && bob.buffers == 2);
    CHECK(alice.reconnected == 1, "alice reconnected %d times", alice.reconnected);
    CHECK(alice.resumed_result == PM_NOERR, "the cut buffer's result %d", alice.resumed_result);
    CHECK(alice.resumed_at > 0, "the buffer went on from 0, not from what bob held");
    CHECK(bob.buffer_ok, "bob's buffer after the cut differs");
    CHECK(alice.away_result == PM_NOERR && bob.cmds == 2 && strcmp(bob.cmd, "while away") == 0,
          "the command sent while away: %d, bob has %d commands", alice.away_result, bob.cmds);
    printf("cut and dialled again: the buffer went on from byte %llu, delivered once and equal; "
           "the command sent while away delivered once\n",
           (unsigned long long)alice.resumed_at);

    if (sealed) {
        uint8_t secret[32], key[32];
        memset(secret, 2, sizeof secret); /* bob's */
        CHECK(pm_identity_of(secret, &key) == PM_NOERR, "pm_identity_of");
        CHECK(alice.peer_keys >= 1 && memcmp(alice.peer_key, key, 32) == 0, "alice has bob's key");
        CHECK(alice.peer_key_status == PM_KEY_LEARNED, "bob's key status %llu",
              (unsigned long long)alice.peer_key_status);
        CHECK(!alice.leaked, "what alice sent is readable on the link");
        printf("sealed: bob's key learned on first use; nothing alice sent readable on the link\n");
    } else {
        CHECK(alice.leaked, "the leak check sees nothing of an unsealed link");
    }

    CHECK(pm_core_is_logged_in(alice.core) == 1, "alice logged in");
    pm_core_close(alice.core);
    RUN_UNTIL(&alice, &bob, alice.closed && bob.ended);
    /* Bob saw his link end: with reconnecting on, he would dial again; the dial fails (alice
     * is gone), the next waits longer, and he gives up by closing. */
    uint64_t first, second;
    CHECK(pm_core_poll_redial(bob.core, &first) == PM_NOERR && first != PM_NEVER, "bob redials");
    CHECK(pm_core_redial_failed(bob.core, now_us()) == PM_NOERR, "redial_failed");
    CHECK(pm_core_poll_redial(bob.core, &second) == PM_NOERR && second != PM_NEVER && second > first,
          "bob's next dial is later");
    CHECK(pm_core_close(bob.core) == PM_NOERR, "bob closes");
    take_events(&bob);
    CHECK(bob.closed, "bob's close told");
    CHECK(pm_core_poll_redial(bob.core, &second) == PM_NOERR && second == PM_NEVER, "no dial after close");
    printf("closed at both ends\n");
    uint64_t redial;
    CHECK(pm_core_poll_redial(alice.core, &redial) == PM_NOERR && redial == PM_NEVER,
          "alice closed for good does not dial again");
    pm_core_free(alice.core);
    pm_core_free(bob.core);
    close(alice.fd);
    close(bob.fd);
    printf("all checks passed\n");
    return 0;
}
