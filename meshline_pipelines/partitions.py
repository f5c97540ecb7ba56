"""Daily UTC partitions shared by every per-system asset.

A partition contains the changes that arrived that day: for files, the files dropped that day. The
current day is included (`end_offset=1`) so a file dropped today can be imported today.
"""

import dagster as dg

from meshline_pipelines import settings

daily_partitions = dg.DailyPartitionsDefinition(
    start_date=settings.partitions_start(), timezone="UTC", end_offset=1
)
