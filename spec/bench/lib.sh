# Shared by the benchmarks (sourced). A benchmark reports each figure as a
# row of the one table `make bench` prints (spec/bench/run.sh):
#   bench_row WORK ANCHOR_NAME ANCHOR_SECONDS OURS_SECONDS TARGET_RATIO
# ratio = ours / anchor; verdict ok when ratio <= target (a target of "-":
# a reference row, no verdict). Rows go to the file
# named by $BENCH_ROWS (run.sh sets it); run alone, a benchmark prints its rows.
bench_calc() { awk "BEGIN { printf \"%.6f\", $* }"; }
bench_row() {
  local line
  line=$(printf '%s\t%s\t%s\t%s\t%s' "$1" "$2" "$3" "$4" "$5")
  if [ -n "${BENCH_ROWS:-}" ]; then
    echo "$line" >>"$BENCH_ROWS"
  else
    echo "$line" | bench_table
  fi
}
# Formats rows (stdin) as the table.
bench_table() {
  awk -F'\t' '
    BEGIN { printf "%-48s %-30s %9s %9s %7s %7s  %s\n", "work", "floor or anchor", "anchor", "ours",
              "ratio", "target", "verdict"
            missed = 0 }
    {
      ratio = ($3 > 0) ? $4 / $3 : 0
      if ($5 == "-") { ok = "(reference)"; tgt = "-" }
      else { ok = (ratio <= $5) ? "ok" : "MISSED"; tgt = "<= " $5 }
      if (ok == "MISSED") missed++
      printf "%-48s %-30s %9s %9s %7.2f %7s  %s\n", $1, $2, fmt($3), fmt($4), ratio, tgt, ok
    }
    END { printf "%d row(s) missed their target\n", missed }
    function fmt(x) { return (x + 0 >= 100) ? sprintf("%.0f", x) : sprintf("%.3f", x) }'
}
bench_median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
bench_now() { date +%s.%N; }
