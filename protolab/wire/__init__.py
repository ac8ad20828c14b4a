"""Bytes on the wire: pcap/pcapng files, header decoding, loopback capture, the kernel's view."""
