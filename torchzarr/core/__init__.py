"""The engine: arrays, groups, selection planning, parallel fetch and decode."""
