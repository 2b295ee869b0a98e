/*
 * clock.h - the runtime's one monotonic clock (CLOCK_MONOTONIC).
 *
 * Every timeout, deadline and rate in the C core reads time here, so they
 * all share one time base and one place to change it.
 */
#ifndef CP_CLOCK_H
#define CP_CLOCK_H

/* Monotonic seconds (fractional); only differences are meaningful. */
double cp_monotonic(void);

/* The same clock in whole milliseconds. */
long cp_monotonic_ms(void);

#endif
