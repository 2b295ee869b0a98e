/*
 * demux.h - Docker log stream demultiplexer (no Lua, no curl here).
 *
 * Turns the bytes of a Docker log or attach stream into line events
 * {ts, stream, line}. Two wire forms exist:
 *
 *   multiplexed (container without a TTY): frames of an 8-byte header
 *     [stream, 0, 0, 0, size as 4 bytes big-endian] followed by size bytes;
 *     stream is 0 stdin, 1 stdout, 2 stderr, 3 system error.
 *   raw (container with a TTY): the bytes as the terminal produced them,
 *     all of it stdout, lines usually ending in "\r\n".
 *
 * With `timestamps=true` on the request, the daemon writes every log message
 * as "<RFC 3339 nano time> <text>". A message is one line the program wrote
 * including its "\n", or, for a line longer than the logging driver's buffer
 * (16 KiB for json-file and local), a "partial" piece without "\n"; the next
 * piece carries its own timestamp. The demultiplexer joins those pieces back
 * into one line, strips the timestamps out of the text and reports the time
 * of the line's first piece.
 *
 * Guarantees:
 *  - one event per line the program wrote, whatever its length, up to
 *    max_line bytes (default CP_DEMUX_MAX_LINE); a longer line comes out as
 *    several events, each but the last flagged `partial`, and nothing is lost;
 *  - events do not depend on how the input is cut into chunks;
 *  - lines of stdout and stderr are assembled separately (their pieces may
 *    interleave on the wire);
 *  - line bytes are passed through unchanged (the "\n" and, in raw mode, one
 *    "\r" before it are removed); cp_demux_json_line() turns them into valid
 *    JSON even when they are not UTF-8.
 *
 * In raw mode the piece boundaries of long lines are not on the wire; a
 * timestamp found exactly `partial_size` bytes into a message without "\n"
 * is taken as the start of the next piece of the same line.
 */
#ifndef CP_DEMUX_H
#define CP_DEMUX_H

#include <stddef.h>

#define CP_DEMUX_MAX_LINE (1024u * 1024u) /* default cap on one event's line */
#define CP_DEMUX_PARTIAL 16384u           /* json-file/local driver piece size */
#define CP_DEMUX_TS_MAX 40u               /* longest timestamp prefix accepted */
#define CP_DEMUX_STREAMS 4

enum cp_demux_mode { CP_DEMUX_AUTO = 0, CP_DEMUX_MUX = 1, CP_DEMUX_RAW = 2 };

enum cp_demux_stream {
  CP_STREAM_STDIN = 0,
  CP_STREAM_STDOUT = 1,
  CP_STREAM_STDERR = 2,
  CP_STREAM_SYSTEM = 3
};

typedef struct cp_demux_opts {
  int mode;            /* enum cp_demux_mode */
  int timestamps;      /* messages start with a timestamp to strip */
  size_t max_line;     /* 0: CP_DEMUX_MAX_LINE */
  size_t partial_size; /* 0: CP_DEMUX_PARTIAL (raw mode only) */
  int keep_cr;         /* raw mode: keep the "\r" of "\r\n" */
} cp_demux_opts;

typedef struct cp_demux_event {
  int stream;       /* enum cp_demux_stream */
  const char *ts;   /* timestamp text of the line's first piece; ts_len 0: none */
  size_t ts_len;
  const char *line; /* without the line end; valid only during the callback */
  size_t len;
  int partial;      /* the line went on beyond max_line: more events follow */
} cp_demux_event;

/* Called for every event; a non-zero return stops the feed, which then
 * returns that value (the event counts as delivered). */
typedef int (*cp_demux_emit)(void *ud, const cp_demux_event *ev);

typedef struct cp_demux_line {
  char *data;
  size_t len, cap;
  char ts[CP_DEMUX_TS_MAX + 1]; /* time of the line's first piece */
  size_t ts_len;
  size_t msg_len;   /* content bytes of the current message (raw partials) */
} cp_demux_line;

typedef struct cp_demux {
  cp_demux_opts o;
  int mode;               /* resolved: MUX or RAW, AUTO until known */
  int failed;             /* a protocol error was seen */
  unsigned char hdr[8];   /* a frame header being collected */
  size_t hdr_len;
  size_t frame_left;      /* payload bytes of the current frame still due */
  int cur;                /* stream of the current frame */
  int probe_on;           /* collecting a possible timestamp prefix */
  int probe_optional;     /* raw partial probe: no match is normal */
  char probe[CP_DEMUX_TS_MAX + 1];
  size_t probe_len;
  int at_start[CP_DEMUX_STREAMS]; /* next content byte starts a message */
  cp_demux_line lines[CP_DEMUX_STREAMS];
  unsigned long long offset;      /* input bytes consumed */
  unsigned long long events;
  char err[128];
} cp_demux;

/* Result codes of feed/finish (besides a callback's own non-zero value). */
#define CP_DEMUX_OK 0
#define CP_DEMUX_EPROTO (-1) /* invalid frame header; see d->err */
#define CP_DEMUX_ENOMEM (-2)

void cp_demux_init(cp_demux *d, const cp_demux_opts *o);
void cp_demux_free(cp_demux *d); /* frees buffers; safe to call twice */

/* Feeds n bytes. Events are delivered through emit. After CP_DEMUX_EPROTO
 * every later call fails the same way. */
int cp_demux_feed(cp_demux *d, const char *p, size_t n, cp_demux_emit emit, void *ud);

/* End of the stream: delivers the lines that have no line end yet. A frame
 * cut short is reported as CP_DEMUX_EPROTO after its lines are delivered. */
int cp_demux_finish(cp_demux *d, cp_demux_emit emit, void *ud);

const char *cp_demux_stream_name(int stream);

/* Length of a Docker timestamp prefix "YYYY-MM-DDTHH:MM:SS[.frac](Z|+hh:mm) "
 * at p (the space included): >0 a match, 0 no match, -1 undecided (need
 * more bytes than n). */
int cp_demux_ts_prefix(const char *p, size_t n);

/* One frame header of Docker's multiplexed stream at p (n bytes): returns 1
 * and sets *stream (0 stdin, 1 stdout, 2 stderr) and *size when the 8-byte
 * header is there, 0 when fewer than 8 bytes are, -1 when it is not a frame
 * header. Byte-exact payloads (exec output) are cut with it. */
int cp_frame_header(const char *p, size_t n, int *stream, size_t *size);

/* Growable output buffer for the renderers. */
typedef struct cp_demux_out {
  char *data;
  size_t len, cap;
} cp_demux_out;

int cp_demux_out_put(cp_demux_out *b, const char *p, size_t n);
void cp_demux_out_free(cp_demux_out *b);

/* Appends s as a JSON string (quotes included): control characters escaped,
 * each byte that is not part of valid UTF-8 (overlong forms, surrogates and
 * code points above U+10FFFF included) replaced by U+FFFD. Returns 0 or
 * CP_DEMUX_ENOMEM. */
int cp_demux_json_string(cp_demux_out *b, const char *s, size_t n);

/* Appends one event as a JSON object and "\n":
 *   {"line":..,["partial":true,]["service":..,]"stream":..,"ts":..}
 * (keys sorted, the way the Lua JSON encoder writes them). */
int cp_demux_json_line(cp_demux_out *b, const cp_demux_event *ev, const char *service,
                       size_t service_len);

#endif
