"""The worker side: the loop that runs jobs and keeps their records, the
supervisor of worker processes, the recovery sweep, immediate mode and the reloader."""
