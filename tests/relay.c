/* tests/relay.c — a small userspace TCP relay that behaves like home Wi-Fi: each chunk of bytes
 * is held back by a delay plus random jitter, and with probability `loss` by an extra
 * retransmission timeout (what a lost TCP segment costs the application).  Order within a
 * direction is kept, as TCP keeps it.  This kernel has no `tc netem`, so the network tests put
 * one of these in front of every device.
 *
 *   relay LISTEN_PORT TARGET_HOST TARGET_PORT [--delay-ms D] [--jitter-ms J] [--loss P] [--rto-ms R]
 *
 * Runs until killed.  Every connection gets two forwarding directions of two threads each: a
 * reader that stamps chunks with their release time and a writer that sends them when due. */
#define _GNU_SOURCE 1
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double delay_ms = 3, jitter_ms = 1, loss = 0, rto_ms = 200;
static const char *target_host;
static int target_port;

typedef struct chunk {
    struct chunk *next;
    double due_ms;
    size_t n;
    char data[];
} chunk;

typedef struct {
    int from, to;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    chunk *head, *tail;
    int eof;
    double last_due;
    unsigned seed;
} pipe_dir;

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void *reader(void *arg)
{
    pipe_dir *d = arg;
    char buf[65536];
    for (;;) {
        ssize_t r = recv(d->from, buf, sizeof buf, 0);
        if (r <= 0) break;
        chunk *c = malloc(sizeof *c + (size_t)r);
        if (!c) break;
        double extra = jitter_ms * (rand_r(&d->seed) / (double)RAND_MAX);
        if (loss > 0 && rand_r(&d->seed) / (double)RAND_MAX < loss) extra += rto_ms;
        c->next = NULL, c->n = (size_t)r;
        memcpy(c->data, buf, (size_t)r);
        pthread_mutex_lock(&d->mu);
        c->due_ms = now_ms() + delay_ms + extra;
        if (c->due_ms < d->last_due) c->due_ms = d->last_due; /* never reorder */
        d->last_due = c->due_ms;
        if (d->tail) d->tail->next = c;
        else d->head = c;
        d->tail = c;
        pthread_cond_signal(&d->cv);
        pthread_mutex_unlock(&d->mu);
    }
    pthread_mutex_lock(&d->mu);
    d->eof = 1;
    pthread_cond_signal(&d->cv);
    pthread_mutex_unlock(&d->mu);
    return NULL;
}

static void *writer(void *arg)
{
    pipe_dir *d = arg;
    for (;;) {
        pthread_mutex_lock(&d->mu);
        while (!d->head && !d->eof) pthread_cond_wait(&d->cv, &d->mu);
        chunk *c = d->head;
        if (!c) {
            pthread_mutex_unlock(&d->mu);
            break;
        }
        d->head = c->next;
        if (!d->head) d->tail = NULL;
        pthread_mutex_unlock(&d->mu);
        double wait = c->due_ms - now_ms();
        if (wait > 0) usleep((useconds_t)(wait * 1000));
        size_t off = 0;
        while (off < c->n) {
            ssize_t w = send(d->to, c->data + off, c->n - off, MSG_NOSIGNAL);
            if (w <= 0) break;
            off += (size_t)w;
        }
        int short_write = off < c->n;
        free(c);
        if (short_write) break;
    }
    shutdown(d->to, SHUT_WR);
    return NULL;
}

static void *connection(void *arg)
{
    int client = (int)(intptr_t)arg, one = 1;
    struct addrinfo hints = {0}, *res;
    hints.ai_family = AF_UNSPEC, hints.ai_socktype = SOCK_STREAM;
    char port[16];
    snprintf(port, sizeof port, "%d", target_port);
    int server = -1;
    if (getaddrinfo(target_host, port, &hints, &res) == 0) {
        server = socket(res->ai_family, res->ai_socktype, res->ai_protocol);
        if (server >= 0 && connect(server, res->ai_addr, res->ai_addrlen) != 0) close(server), server = -1;
        freeaddrinfo(res);
    }
    if (server < 0) {
        close(client);
        return NULL;
    }
    setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(server, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    pipe_dir up = {client, server, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, NULL, 0, 0, (unsigned)client * 7919u};
    pipe_dir down = {server, client, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, NULL, 0, 0, (unsigned)server * 104729u};
    pthread_t t[4];
    pthread_create(&t[0], NULL, reader, &up);
    pthread_create(&t[1], NULL, writer, &up);
    pthread_create(&t[2], NULL, reader, &down);
    pthread_create(&t[3], NULL, writer, &down);
    for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
    close(client), close(server);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: relay LISTEN_PORT TARGET_HOST TARGET_PORT [--delay-ms D] [--jitter-ms J] [--loss P] [--rto-ms R]\n");
        return 2;
    }
    int listen_port = atoi(argv[1]);
    target_host = argv[2], target_port = atoi(argv[3]);
    for (int i = 4; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--delay-ms")) delay_ms = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--jitter-ms")) jitter_ms = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--loss")) loss = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--rto-ms")) rto_ms = atof(argv[i + 1]);
    }
    signal(SIGPIPE, SIG_IGN);
    int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET, a.sin_port = htons((uint16_t)listen_port), a.sin_addr.s_addr = htonl(INADDR_ANY);
    if (bind(s, (struct sockaddr *)&a, sizeof a) || listen(s, 16)) {
        perror("relay: listen");
        return 1;
    }
    fprintf(stderr, "relay: %d -> %s:%d, delay %.1f ms, jitter %.1f ms, loss %.3f\n", listen_port, target_host, target_port, delay_ms,
            jitter_ms, loss);
    for (;;) {
        int c = accept(s, NULL, NULL);
        if (c < 0) continue;
        pthread_t t;
        if (pthread_create(&t, NULL, connection, (void *)(intptr_t)c) == 0) pthread_detach(t);
        else close(c);
    }
}
