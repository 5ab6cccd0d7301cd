"""The composition root: builds the agent from its config and runs it.

`l3fabric agent` calls run(); nothing else constructs the real parts (netlink
data plane, datastore, metrics registry, ExaBGP speaker), so every other
module can be tested with fakes passed in.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from l3fabric import logs
from l3fabric.agent.bgp import Speaker
from l3fabric.agent.daemon import Agent
from l3fabric.agent.metrics import Metrics
from l3fabric.bgp.exabgp import ExabgpSpeaker
from l3fabric.config import Config, load_config
from l3fabric.dataplane import NetlinkDataplane
from l3fabric.datastore import open_datastore


def build_agent(config: Config) -> Agent:
    """The real agent for `config`; no I/O until Agent.start()."""
    ds = config.datastore
    store = open_datastore(
        ds.type,
        path=ds.path,
        endpoints=ds.endpoints,
        prefix=ds.prefix,
        timeout=ds.timeout,
        connect_timeout=ds.connect_timeout,
        ca=ds.ca,
        cert=ds.cert,
        key=ds.key,
    )
    return Agent(
        config,
        store=store,
        dataplane=NetlinkDataplane(),
        metrics=Metrics(CollectorRegistry()),
        speaker_factory=exabgp_speaker,
    )


def exabgp_speaker(config: Config) -> Speaker:
    return ExabgpSpeaker(
        workdir=config.state_dir / "exabgp",
        router_id=config.node.router_id,
        local_as=config.node.asn,
        command=config.bgp.exabgp.command if config.bgp.exabgp.command != "exabgp" else None,
        port=config.bgp.port,
        # ExaBGP logs a line per route at INFO: at 10k routes that is most of
        # its work. Only an agent debugging its own logs gets them.
        log_level="INFO" if config.log.level == "debug" else "WARNING",
        orphan_grace=orphan_grace(config),
    )


# Without graceful restart a peer drops our routes the moment the session
# goes, so a dead agent's ExaBGP is given this long before it stops.
ORPHAN_GRACE_WITHOUT_GR = 120.0


def orphan_grace(config: Config) -> float:
    """How long ExaBGP keeps announcing after its agent died: long enough
    for a restart to lose nothing (peers keep our routes for the restart
    time anyway), then the node stops claiming workloads it cannot manage."""
    gr = config.bgp.graceful_restart
    return float(gr.restart_time) if gr.enabled else ORPHAN_GRACE_WITHOUT_GR


def run(config_path: str) -> int:
    """Load the config (ConfigError on a bad file), then serve until SIGTERM."""
    config = load_config(config_path)
    logs.setup(config.log.level, config.log.format)
    return build_agent(config).run()
