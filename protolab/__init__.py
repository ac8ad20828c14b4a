"""protolab: see where state lives in network protocols and backends.

Importing the package is cheap on purpose: nothing here imports scapy, aioquic or dnspython.
"""

__version__ = "0.1.0"
