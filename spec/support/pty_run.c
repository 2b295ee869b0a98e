/*
 * pty_run - runs a command on a new pseudo-terminal and plays a script of
 * keystrokes at it, for the specs of interactive exec (cpdocker exec -it).
 *
 *   pty_run ROWS COLS SCRIPT -- COMMAND [ARG...]
 *
 * SCRIPT has one step per line:
 *   wait TEXT     wait (at most 20 s) until TEXT appears in the output after
 *                 the end of the previous match
 *   send TEXT     type TEXT (escapes: \r \n \t \\ \xHH)
 *   resize R C    set the window size (the kernel sends SIGWINCH)
 *   mode          note whether the terminal is in raw mode now (no ICANON,
 *                 no ECHO, no ISIG) on stderr as "mode=raw" or "mode=cooked"
 *   sleep S       pause S seconds (fractions allowed)
 *   signal NAME   send TERM, HUP or INT to the command
 * After the script it waits (at most 20 s) for the command to end, writes
 * everything the command printed to stdout, and on stderr:
 *   exit=N          the command's exit status (or signal=N)
 *   restored=1|0    whether the terminal's mode after the command equals its
 *                   mode before it (a raw-mode program must restore it)
 * Exits 0, or 3 when a step timed out (the output so far is still printed).
 */
#define _XOPEN_SOURCE 700
#define _DEFAULT_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

static char *out;
static size_t out_len, out_cap, mark;
static int master = -1;
static pid_t child;
static int child_status = -1;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Reads the command's output for up to secs; stops early when the child
 * has ended and nothing more is there. */
static void pump(double secs) {
  double end = now() + secs;
  for (;;) {
    double left = end - now();
    if (left <= 0) return;
    struct pollfd p = {.fd = master, .events = POLLIN, .revents = 0};
    int n = poll(&p, 1, left > 0.05 ? 50 : (int)(left * 1000) + 1);
    if (n > 0 && (p.revents & POLLIN)) {
      char buf[65536];
      ssize_t r = read(master, buf, sizeof buf);
      if (r > 0) {
        if (out_len + (size_t)r > out_cap) {
          out_cap = (out_len + (size_t)r) * 2;
          out = realloc(out, out_cap);
          if (!out) exit(5);
        }
        memcpy(out + out_len, buf, (size_t)r);
        out_len += (size_t)r;
        continue;
      }
    }
    if (child_status == -1) {
      int st;
      if (waitpid(child, &st, WNOHANG) == child) child_status = st;
    }
    if (child_status != -1 && n <= 0) return;
  }
}

static int find(const char *text) {
  size_t tl = strlen(text);
  for (size_t i = mark; i + tl <= out_len; i++) {
    if (memcmp(out + i, text, tl) == 0) {
      mark = i + tl;
      return 1;
    }
  }
  return 0;
}

static size_t unescape(const char *s, char *dst) {
  size_t n = 0;
  for (; *s; s++) {
    if (*s != '\\' || !s[1]) {
      dst[n++] = *s;
      continue;
    }
    s++;
    switch (*s) {
    case 'r': dst[n++] = '\r'; break;
    case 'n': dst[n++] = '\n'; break;
    case 't': dst[n++] = '\t'; break;
    case 'x': {
      char hex[3] = {s[1], s[1] ? s[2] : 0, 0};
      dst[n++] = (char)strtol(hex, NULL, 16);
      s += 2;
      break;
    }
    default: dst[n++] = *s;
    }
  }
  return n;
}

int main(int argc, char **argv) {
  if (argc < 6 || strcmp(argv[4], "--") != 0) {
    fprintf(stderr, "usage: pty_run ROWS COLS SCRIPT -- COMMAND [ARG...]\n");
    return 2;
  }
  FILE *script = fopen(argv[3], "r");
  if (!script) {
    perror(argv[3]);
    return 2;
  }
  master = posix_openpt(O_RDWR | O_NOCTTY);
  if (master < 0 || grantpt(master) != 0 || unlockpt(master) != 0) {
    perror("posix_openpt");
    return 2;
  }
  const char *sname = ptsname(master);
  int slave = open(sname, O_RDWR | O_NOCTTY);
  if (slave < 0) {
    perror(sname);
    return 2;
  }
  struct winsize ws = {.ws_row = (unsigned short)atoi(argv[1]),
                       .ws_col = (unsigned short)atoi(argv[2])};
  ioctl(master, TIOCSWINSZ, &ws);
  struct termios before, t;
  tcgetattr(slave, &before);
  child = fork();
  if (child == 0) {
    setsid();
    ioctl(slave, TIOCSCTTY, 0);
    dup2(slave, 0);
    dup2(slave, 1);
    dup2(slave, 2);
    close(master);
    if (slave > 2) close(slave);
    execvp(argv[5], argv + 5);
    perror(argv[5]);
    _exit(127);
  }
  int rc = 0;
  char line[4096];
  while (fgets(line, sizeof line, script)) {
    line[strcspn(line, "\n")] = 0;
    char *arg = strchr(line, ' ');
    if (arg) *arg++ = 0;
    else arg = line + strlen(line);
    if (strcmp(line, "wait") == 0) {
      double end = now() + 20;
      while (!find(arg) && now() < end) pump(0.05);
      if (now() >= end) {
        fprintf(stderr, "pty_run: timed out waiting for \"%s\"\n", arg);
        rc = 3;
        break;
      }
    } else if (strcmp(line, "send") == 0) {
      char buf[4096];
      size_t n = unescape(arg, buf);
      if (write(master, buf, n) != (ssize_t)n) perror("write");
    } else if (strcmp(line, "resize") == 0) {
      int r = 0, c = 0;
      sscanf(arg, "%d %d", &r, &c);
      ws.ws_row = (unsigned short)r;
      ws.ws_col = (unsigned short)c;
      ioctl(master, TIOCSWINSZ, &ws);
    } else if (strcmp(line, "mode") == 0) {
      tcgetattr(slave, &t);
      int raw = !(t.c_lflag & (ICANON | ECHO | ISIG));
      fprintf(stderr, "mode=%s\n", raw ? "raw" : "cooked");
    } else if (strcmp(line, "sleep") == 0) {
      pump(atof(arg));
    } else if (strcmp(line, "signal") == 0) {
      int sig = strcmp(arg, "TERM") == 0 ? SIGTERM : strcmp(arg, "HUP") == 0 ? SIGHUP : SIGINT;
      kill(child, sig);
    }
  }
  double end = now() + 20;
  while (child_status == -1 && now() < end) pump(0.1);
  pump(0.2);
  if (child_status == -1) {
    kill(child, SIGKILL);
    waitpid(child, &child_status, 0);
    fprintf(stderr, "pty_run: the command did not end; killed\n");
    rc = 3;
  }
  tcgetattr(slave, &t);
  fwrite(out, 1, out_len, stdout);
  if (WIFEXITED(child_status)) fprintf(stderr, "exit=%d\n", WEXITSTATUS(child_status));
  else fprintf(stderr, "signal=%d\n", WTERMSIG(child_status));
  int same = t.c_iflag == before.c_iflag && t.c_oflag == before.c_oflag &&
             t.c_lflag == before.c_lflag && t.c_cflag == before.c_cflag;
  fprintf(stderr, "restored=%d\n", same);
  free(out);
  return rc;
}
