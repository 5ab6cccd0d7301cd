"""The node agent: wires the lower layers together and serves the control socket."""
