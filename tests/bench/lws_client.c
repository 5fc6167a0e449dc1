/*
 * The benchmark's libwebsockets peer: a minimal client, built by
 * tests/bench/pipeline.rs with the system C compiler when
 * libwebsockets-dev is installed.
 *
 *   lws_client HOST PORT PATH N IDLE_MS
 *
 * Connects to ws://HOST:PORT/PATH, prints "ready" once open, then either
 * counts N text messages (N > 0) or stays idle for IDLE_MS (N = 0), and
 * prints one JSON line: messages received, seconds from open to the last
 * one, CPU time, voluntary context switches (wake-ups) and RSS.
 */
#include <libwebsockets.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static long want, got;
static int done, opened;
static struct timespec t_open, t_last;
static lws_sorted_usec_list_t idle_timer;
static struct lws_context *context;

static int callback(struct lws *wsi, enum lws_callback_reasons reason, void *user,
                    void *in, size_t len)
{
    (void)user;
    (void)len;
    switch (reason) {
    case LWS_CALLBACK_CLIENT_ESTABLISHED:
        opened = 1;
        clock_gettime(CLOCK_MONOTONIC, &t_open);
        printf("ready\n");
        fflush(stdout);
        break;
    case LWS_CALLBACK_CLIENT_RECEIVE:
        if (lws_is_final_fragment(wsi) && !lws_remaining_packet_payload(wsi)) {
            got++;
            clock_gettime(CLOCK_MONOTONIC, &t_last);
            if (want > 0 && got >= want)
                done = 1;
        }
        break;
    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
        fprintf(stderr, "lws_client: connection error: %s\n", in ? (const char *)in : "?");
        done = 2;
        break;
    case LWS_CALLBACK_CLIENT_CLOSED:
        if (!done)
            done = 3;
        break;
    default:
        break;
    }
    return 0;
}

static const struct lws_protocols protocols[] = {
    {"bench", callback, 0, 1 << 17, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

static void idle_over(lws_sorted_usec_list_t *sul)
{
    (void)sul;
    done = 1;
    lws_cancel_service(context);
}

static long status_field(const char *name)
{
    char line[256];
    long v = -1;
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, name, strlen(name)) == 0) {
            v = strtol(line + strlen(name), NULL, 10);
            break;
        }
    }
    fclose(f);
    return v;
}

static double seconds(struct timespec a, struct timespec b)
{
    return (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
}

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: lws_client HOST PORT PATH N IDLE_MS\n");
        return 2;
    }
    want = atol(argv[4]);
    long idle_ms = atol(argv[5]);
    lws_set_log_level(LLL_ERR, NULL);

    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.protocols = protocols;
    context = lws_create_context(&info);
    if (!context) {
        fprintf(stderr, "lws_client: no context\n");
        return 1;
    }
    struct lws_client_connect_info ci;
    memset(&ci, 0, sizeof ci);
    ci.context = context;
    ci.address = argv[1];
    ci.port = atoi(argv[2]);
    ci.path = argv[3];
    ci.host = argv[1];
    ci.origin = argv[1];
    ci.local_protocol_name = "bench";
    if (!lws_client_connect_via_info(&ci)) {
        fprintf(stderr, "lws_client: connect failed\n");
        return 1;
    }
    long switches0 = -1;
    struct timespec cpu0 = {0, 0}, cpu1;
    int timer_set = 0;
    while (!done) {
        if (opened && !timer_set) {
            timer_set = 1;
            switches0 = status_field("voluntary_ctxt_switches:");
            clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &cpu0);
            if (want == 0)
                lws_sul_schedule(context, 0, &idle_timer, idle_over, idle_ms * LWS_US_PER_MS);
        }
        if (lws_service(context, 0) < 0)
            break;
    }
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &cpu1);
    long switches1 = status_field("voluntary_ctxt_switches:");
    printf("{\"received\":%ld,\"seconds\":%.6f,\"cpu_ms\":%.3f,\"wakeups\":%ld,\"rss_kb\":%ld,"
           "\"status\":%d}\n",
           got, got ? seconds(t_open, t_last) : 0.0, seconds(cpu0, cpu1) * 1e3,
           switches0 >= 0 ? switches1 - switches0 : -1, status_field("VmRSS:"), done);
    fflush(stdout);
    lws_context_destroy(context);
    return done == 1 ? 0 : 1;
}
