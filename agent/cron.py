"""Cron expressions for scheduled jobs: the config's `Cron` type and the trigger it makes.

What an expression means (docs/store.md, "Cron expressions"):

- crontab(5)'s five fields, `minute hour day-of-month month day-of-week`, or one of
  @hourly, @daily (@midnight), @weekly, @monthly, @yearly (@annually).
- In UTC, on every host: `0 3 * * *` is 03:00 UTC. The agent schedules everything in
  UTC (agent/scheduler.py); a zone with daylight saving would skip a 02:30 run one
  night a year and run it twice another, and one fleet-wide time reads the same on
  every host (as in Prometheus and Alertmanager).
- Days of the week by name only (sun, mon-fri, sat,sun): APScheduler 3, which runs
  these, counts 0 as Monday where crontab counts it as Sunday, and ignores a step in
  this field. A number or a step would run on other days than a crontab user meant,
  so they are refused with a message saying what to write.
- Day of month and day of week are not both restricted: crontab runs when either
  matches, APScheduler only when both do; rather than pick one, refuse, and say so.
- An expression that can never fire (`0 0 30 2 *`) is refused.

APScheduler's cron trigger, and tzlocal with it, is imported only when an expression
is checked or scheduled: an agent whose config has none never loads it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

from pydantic import AfterValidator

if TYPE_CHECKING:
    from apscheduler.triggers.cron import CronTrigger

MACROS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * sun",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MAX_LENGTH = 256


def trigger(expr: str) -> CronTrigger:
    """The UTC trigger of an expression; ValueError saying what is wrong if it is not one."""
    from apscheduler.triggers.cron import CronTrigger

    minute, hour, day, month, weekday = fields = _fields(expr)
    now = datetime.now(UTC)
    try:
        cron = CronTrigger.from_crontab(" ".join(fields), timezone=UTC)
        # Every date there is comes round within nine years (29 February too): searched
        # that far, "never" is known at once, where the trigger would walk to the year 9999.
        soon = CronTrigger(
            minute=minute,
            hour=hour,
            day=day,
            month=month,
            day_of_week=weekday,
            year=f"{now.year}-{now.year + 8}",
            timezone=UTC,
        )
    except ValueError as exc:
        raise ValueError(f"cron expression {expr!r}: {exc}") from None
    if soon.get_next_fire_time(None, now) is None:
        raise ValueError(f"cron expression {expr!r} never fires (no such date)")
    return cron


def check(expr: str) -> str:
    """A pydantic validator: the expression, with its whitespace tidied, if it is one."""
    trigger(expr)
    return " ".join(expr.split())


# A config field holding a cron expression: `schedule: Cron`. check-config then reports
# a bad one as "FILE: path.to.schedule: cron expression '...': what is wrong".
Cron = Annotated[str, AfterValidator(check)]


def _fields(expr: str) -> list[str]:
    if len(expr) > MAX_LENGTH:
        raise ValueError(f"a cron expression is at most {MAX_LENGTH} characters")
    text = " ".join(expr.split())
    if not text.isprintable():
        raise ValueError(f"cron expression {expr!r}: control characters")
    if text.startswith("@"):
        if text not in MACROS:
            raise ValueError(f"cron expression {expr!r}: not one of {', '.join(MACROS)}")
        text = MACROS[text]
    fields = text.split()
    if len(fields) != 5:
        raise ValueError(
            f"cron expression {expr!r}: expected 5 fields"
            f" (minute hour day-of-month month day-of-week), got {len(fields)}"
        )
    day, weekday = fields[2], fields[4]
    for item in weekday.split(","):
        if not (item == "*" or all(name in DAYS for name in item.lower().split("-", 1))):
            raise ValueError(
                f"cron expression {expr!r}: day of week {item!r}: write days by name"
                " (sun, mon-fri, mon,wed,fri); numbers and steps are refused because crontab"
                " counts 0 as Sunday and APScheduler 3, which runs these, counts 0 as Monday"
                " and ignores steps here"
            )
    if day != "*" and weekday != "*":
        raise ValueError(
            f"cron expression {expr!r}: give a day of month or a day of week, not both"
            " (crontab runs when either matches, APScheduler when both do)"
        )
    return fields
