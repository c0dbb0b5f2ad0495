"""Routing: the model table (public name -> tiers of weighted targets) and failover before the first byte."""
