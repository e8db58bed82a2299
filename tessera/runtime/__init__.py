"""Runtime services: devices, memory statistics, random numbers."""
