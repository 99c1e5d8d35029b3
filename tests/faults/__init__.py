"""The fault suite: simulated hosts in network namespaces (``make faults``, needs root)."""
