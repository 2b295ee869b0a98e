/*
 * demux_bench.c - offline throughput of the C demultiplexer: reads a
 * captured Docker log stream into memory, feeds it in 64 KiB chunks (as curl
 * hands them over) and counts events; with "json" also renders every event
 * as a JSON line. Prints: bytes events seconds.
 *   demux_bench FILE [json] [repeat]
 */
#include "../../runtime/demux.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct counter {
  unsigned long long events, bytes;
  int json;
  cp_demux_out out;
} counter;

static int on_event(void *ud, const cp_demux_event *ev) {
  counter *c = ud;
  c->events++;
  c->bytes += ev->len;
  if (c->json) {
    if (cp_demux_json_line(&c->out, ev, NULL, 0)) return CP_DEMUX_ENOMEM;
    if (c->out.len > (1u << 20)) c->out.len = 0; /* written to /dev/null */
  }
  return 0;
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: demux_bench FILE [json] [repeat]\n");
    return 2;
  }
  FILE *f = fopen(argv[1], "rb");
  if (!f) {
    perror(argv[1]);
    return 1;
  }
  fseek(f, 0, SEEK_END);
  long size = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *data = malloc((size_t)size + 1);
  if (!data || fread(data, 1, (size_t)size, f) != (size_t)size) {
    fprintf(stderr, "cannot read %s\n", argv[1]);
    return 1;
  }
  fclose(f);
  int json = argc > 2 && strcmp(argv[2], "json") == 0;
  int repeat = argc > 3 ? atoi(argv[3]) : 1;
  double best = 1e9;
  counter c;
  for (int r = 0; r < repeat; r++) {
    memset(&c, 0, sizeof c);
    c.json = json;
    cp_demux d;
    cp_demux_opts o = {CP_DEMUX_AUTO, 1, 0, 0, 0};
    cp_demux_init(&d, &o);
    double t0 = now();
    for (long off = 0; off < size; off += 65536) {
      size_t n = (size_t)(size - off < 65536 ? size - off : 65536);
      if (cp_demux_feed(&d, data + off, n, on_event, &c)) {
        fprintf(stderr, "demux failed: %s\n", d.err);
        return 1;
      }
    }
    cp_demux_finish(&d, on_event, &c);
    double t = now() - t0;
    if (t < best) best = t;
    cp_demux_free(&d);
    cp_demux_out_free(&c.out);
  }
  printf("%ld %llu %.3f\n", size, c.events, best);
  free(data);
  return 0;
}
