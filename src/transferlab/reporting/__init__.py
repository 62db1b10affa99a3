"""Building a sweep's comparison report: collect job results, then write the table and plots."""
