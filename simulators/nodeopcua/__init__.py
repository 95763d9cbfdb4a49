"""node-opcua load server (server.js) and its Python launcher, for scale and sampling tests."""

from simulators.nodeopcua.launcher import (
    NAMESPACE_URI,
    NodeOpcuaServer,
    NodeOpcuaUnavailable,
    node_opcua_available,
)

__all__ = ["NAMESPACE_URI", "NodeOpcuaServer", "NodeOpcuaUnavailable", "node_opcua_available"]
