"""Daily UTC partitions shared by every per-system asset.

A partition holds the changes that arrived that day: for files, the files dropped that day. The
current day is included (`end_offset=1`) so a file dropped today can be imported today.
"""

import dagster as dg

PARTITIONS_START = "2020-01-01"

daily_partitions = dg.DailyPartitionsDefinition(start_date=PARTITIONS_START, timezone="UTC", end_offset=1)
