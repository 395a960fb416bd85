"""The runtime: decode -> restore -> encode stages, profiles, reports and the temporal state."""
