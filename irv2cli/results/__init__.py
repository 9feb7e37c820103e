"""Results: records and labels, the writers, and the files predict and embed write and
resume."""
