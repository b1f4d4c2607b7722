"""When a schedule fires: a five-field cron expression read in an IANA time zone, as UTC instants.

cronsim does the calendar, daylight-saving changes included: a time that does not exist on the
spring-forward day (02:30 when clocks jump from 02:00 to 03:00) fires once, at the jump (03:00);
a time that happens twice on the fall-back day fires once, at its first occurrence. Read from a
moment inside the repeated hour, cronsim can name that hour's first occurrence again, which lies in
the past: `Recurrence.after` only ever moves forward, so no fire time comes twice.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError


class CronError(ValueError):
    """An expression or time zone that cannot be used, and which field it is."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Recurrence:
    cron: str
    zone: ZoneInfo

    def after(self, moment: datetime) -> Iterator[datetime]:
        """The fire times strictly after `moment`, in order, as UTC; none past cronsim's horizon (50 years)."""
        last = moment.astimezone(UTC)
        for local in CronSim(self.cron, last.astimezone(self.zone)):
            fire = local.astimezone(UTC)
            if fire > last:
                last = fire
                yield fire

    def next(self, moment: datetime) -> datetime | None:
        return next(self.after(moment), None)

    def latest(self, since: datetime, until: datetime) -> datetime | None:
        """The last fire time in (`since`, `until`], if any."""
        latest = None
        for fire in self.after(since):
            if fire > until:
                break
            latest = fire
        return latest


def recurrence(cron: str, timezone: str) -> Recurrence:
    """Check `cron` (five fields: a minute is the finest step) and `timezone`.

    Raises:
        CronError: naming the field at fault.
    """
    if len(cron.split()) != 5:
        raise CronError("cron", "cron must have five fields (minute hour day-of-month month day-of-week); "
                                "a schedule fires at most once a minute")
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise CronError("timezone", f"timezone {timezone!r} is not an IANA time zone (e.g. Europe/Berlin)") from None
    try:
        CronSim(cron, datetime.now(zone))
    except CronSimError as error:
        raise CronError("cron", f"cron {cron!r} is not a cron expression: {str(error).lower()}") from None
    return Recurrence(cron, zone)
