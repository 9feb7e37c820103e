"""Results: records and labels, the writers (csv/jsonl/json), and results files that resume."""
