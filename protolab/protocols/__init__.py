"""Sans-IO protocol cores: state as objects fed bytes and time; no socket, thread, process, clock
or file."""
