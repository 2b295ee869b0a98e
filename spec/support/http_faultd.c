/*
 * http_faultd.c - an HTTP server on a unix socket that misbehaves on
 * purpose, for the transport's fault specs (spec/unit/http_faults_spec.lua).
 *
 *   http_faultd SOCKET_PATH [LIFETIME_SECONDS]
 *
 * The request path picks the fault: GET /fault/<name>. Each connection is
 * served by a forked child that answers one request and exits; nothing
 * runs longer than HOLD_MAX seconds, and the server itself exits after
 * LIFETIME_SECONDS (default 120) or on SIGTERM, removing its socket.
 *
 *   ok            200, JSON body with Content-Length
 *   chunked-ok    200, a well-formed chunked body
 *   truncated     Content-Length: 1000, 10 bytes sent, connection closed
 *   bad-chunk     chunked, a chunk size that is not hexadecimal
 *   chunk-cut     chunked, one chunk, then the connection closes (no last chunk)
 *   no-answer     reads the request, never answers (until HOLD_MAX)
 *   head-only     status line and half the headers, then silence
 *   endless       200 chunked, a chunk every 20 ms forever (until HOLD_MAX)
 *   stall-body    200 chunked, one chunk, then silence
 *   trickle       Content-Length: 100000, one byte every 200 ms
 *   garbage       bytes that are not HTTP at all
 *   bad-status    "HTTP/1.1 OK200 Fine"
 *   huge-header   a 300 KiB header line
 *   bad-length    Content-Length: -5
 *   close         closes at once without a byte
 *   error-text    500 with a text/plain body (no JSON message)
 *   bad-json      200 application/json with a body that is not JSON
 *   flood         200 chunked, 64 KiB chunks as fast as the client reads (until HOLD_MAX)
 */
#define _DEFAULT_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define HOLD_MAX 20

static volatile sig_atomic_t stop_server = 0;
static const char *sock_path;

static void on_term(int sig) {
  (void)sig;
  stop_server = 1;
}

static void nap_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

/* Writes everything; returns -1 once the peer is gone. */
static int put(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
    if (k < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    p += k;
    n -= (size_t)k;
  }
  return 0;
}

static int puts_fd(int fd, const char *s) { return put(fd, s, strlen(s)); }

static int chunk(int fd, const char *p, size_t n) {
  char head[32];
  snprintf(head, sizeof head, "%zx\r\n", n);
  if (puts_fd(fd, head) || put(fd, p, n) || puts_fd(fd, "\r\n")) return -1;
  return 0;
}

static void hold(int fd, int seconds) {
  /* wait for the client to go away, bounded */
  struct pollfd p = {fd, POLLIN, 0};
  char buf[256];
  time_t end = time(NULL) + seconds;
  while (time(NULL) < end) {
    if (poll(&p, 1, 200) > 0) {
      if (recv(fd, buf, sizeof buf, 0) <= 0) return;
    }
  }
}

#define OK_HEAD "HTTP/1.1 200 OK\r\nConnection: close\r\n"
#define CHUNKED_HEAD OK_HEAD "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"

static void serve(int fd) {
  char req[8192];
  size_t len = 0;
  time_t end = time(NULL) + 5;
  while (len < sizeof req - 1 && time(NULL) < end) { /* the request head, bounded */
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, 200) <= 0) continue;
    ssize_t k = recv(fd, req + len, sizeof req - 1 - len, 0);
    if (k <= 0) return;
    len += (size_t)k;
    req[len] = '\0';
    if (strstr(req, "\r\n\r\n")) break;
  }
  req[len] = '\0';
  char name[64] = "";
  const char *f = strstr(req, "/fault/");
  if (f) sscanf(f + 7, "%63[a-z-]", name);

  if (strcmp(name, "ok") == 0) {
    puts_fd(fd, OK_HEAD "Content-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"ok\":true}");
  } else if (strcmp(name, "chunked-ok") == 0) {
    puts_fd(fd, CHUNKED_HEAD);
    chunk(fd, "{\"ok\":", 6);
    chunk(fd, "true}", 5);
    puts_fd(fd, "0\r\n\r\n");
  } else if (strcmp(name, "truncated") == 0) {
    puts_fd(fd, OK_HEAD "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"partial\"");
  } else if (strcmp(name, "bad-chunk") == 0) {
    puts_fd(fd, CHUNKED_HEAD "5\r\nhello\r\nzzz\r\nwhat\r\n0\r\n\r\n");
  } else if (strcmp(name, "chunk-cut") == 0) {
    puts_fd(fd, CHUNKED_HEAD);
    chunk(fd, "{\"cut\":", 7);
  } else if (strcmp(name, "no-answer") == 0) {
    hold(fd, HOLD_MAX);
  } else if (strcmp(name, "head-only") == 0) {
    puts_fd(fd, "HTTP/1.1 200 OK\r\nContent-Type: appl");
    hold(fd, HOLD_MAX);
  } else if (strcmp(name, "endless") == 0) {
    puts_fd(fd, CHUNKED_HEAD);
    time_t stop = time(NULL) + HOLD_MAX;
    while (time(NULL) < stop && chunk(fd, "{\"tick\":1}\n", 11) == 0) nap_ms(20);
  } else if (strcmp(name, "flood") == 0) {
    static char block[65536];
    memset(block, 'x', sizeof block);
    block[sizeof block - 1] = '\n';
    puts_fd(fd, CHUNKED_HEAD);
    time_t stop = time(NULL) + HOLD_MAX;
    while (time(NULL) < stop && chunk(fd, block, sizeof block) == 0) {
    }
  } else if (strcmp(name, "stall-body") == 0) {
    puts_fd(fd, CHUNKED_HEAD);
    chunk(fd, "{\"first\":1}\n", 12);
    hold(fd, HOLD_MAX);
  } else if (strcmp(name, "trickle") == 0) {
    puts_fd(fd, OK_HEAD "Content-Length: 100000\r\n\r\n");
    time_t stop = time(NULL) + HOLD_MAX;
    while (time(NULL) < stop && put(fd, "x", 1) == 0) nap_ms(200);
  } else if (strcmp(name, "garbage") == 0) {
    put(fd, "\x00\x01\x02 this is not HTTP \xff\xfe\r\n\r\n", 28);
  } else if (strcmp(name, "bad-status") == 0) {
    puts_fd(fd, "HTTP/1.1 OK200 Fine\r\nContent-Length: 2\r\n\r\nok");
  } else if (strcmp(name, "huge-header") == 0) {
    puts_fd(fd, "HTTP/1.1 200 OK\r\nX-Huge: ");
    static char big[300 * 1024];
    memset(big, 'a', sizeof big);
    put(fd, big, sizeof big);
    puts_fd(fd, "\r\nContent-Length: 2\r\n\r\nok");
  } else if (strcmp(name, "bad-length") == 0) {
    puts_fd(fd, "HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\nhello");
  } else if (strcmp(name, "close") == 0) {
    /* nothing */
  } else if (strcmp(name, "error-text") == 0) {
    puts_fd(fd, "HTTP/1.1 500 Internal Server Error\r\nConnection: close\r\n"
                "Content-Type: text/plain\r\nContent-Length: 22\r\n\r\nsomething broke inside");
  } else if (strcmp(name, "bad-json") == 0) {
    puts_fd(fd, OK_HEAD "Content-Type: application/json\r\nContent-Length: 9\r\n\r\n{\"a\": [1,");
  } else {
    puts_fd(fd, "HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Type: application/json\r\n"
                "Content-Length: 29\r\n\r\n{\"message\":\"no such fault\"}\r\n");
  }
  shutdown(fd, SHUT_RDWR);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: http_faultd SOCKET_PATH [LIFETIME_SECONDS]\n");
    return 2;
  }
  sock_path = argv[1];
  long lifetime = argc > 2 ? strtol(argv[2], NULL, 10) : 120;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_term;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  sa.sa_handler = SIG_IGN;
  sa.sa_flags = SA_NOCLDWAIT; /* children reap themselves */
  sigaction(SIGCHLD, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);

  int s = socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un addr;
  memset(&addr, 0, sizeof addr);
  addr.sun_family = AF_UNIX;
  if (strlen(sock_path) >= sizeof addr.sun_path) {
    fprintf(stderr, "http_faultd: socket path too long\n");
    return 1;
  }
  strcpy(addr.sun_path, sock_path);
  unlink(sock_path);
  if (s < 0 || bind(s, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(s, 64) != 0) {
    perror("http_faultd");
    return 1;
  }
  time_t end = time(NULL) + lifetime;
  while (!stop_server && time(NULL) < end) {
    struct pollfd p = {s, POLLIN, 0};
    if (poll(&p, 1, 200) <= 0) continue;
    int c = accept(s, NULL, NULL);
    if (c < 0) continue;
    pid_t pid = fork();
    if (pid == 0) {
      close(s);
      serve(c);
      close(c);
      _exit(0);
    }
    close(c);
  }
  close(s);
  unlink(sock_path);
  return 0;
}
