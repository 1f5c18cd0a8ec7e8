"""Driver scripts run inside the peers' own virtualenvs (and the floor in ours).

They import only `workload` (plain standard library) from this folder, never `bench` or
`crew_platform`, and print one JSON document on stdout.
"""
