"""The benchmark suite run by `superstatic bench`."""
