"""Benchmarks: ``carewatch bench ingest`` and the pieces it is built from.

- ``workload``   the devices and the pre-encoded event envelopes every measurement shares
- ``publishers`` the publisher processes (mqtt5 over a raw socket, or ``mosquitto_pub -l``)
- ``limits``     what the broker and PostgreSQL can do alone (do-nothing subscribers, COPY)
- ``naive``      the bridge as people write it (paho callback, one INSERT per message)
- ``children``   subprocesses that always end with the benchmark
- ``ingest``     the run: start private instances, measure each part, print the comparison
"""
