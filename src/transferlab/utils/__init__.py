"""Small helpers shared by the entry points: errors, atomic I/O, logging and run bookkeeping."""
