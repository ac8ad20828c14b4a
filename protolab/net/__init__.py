"""The I/O edge: sockets, servers, clients, processes, the fault proxy, stores, balancers."""
