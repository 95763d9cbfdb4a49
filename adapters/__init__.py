"""Southbound protocol adapters. They know their protocol and nothing of AAS, buffers or sinks."""
