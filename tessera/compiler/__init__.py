"""The compiler: tracing into the graph IR, simplification passes, and execution through the registry."""
