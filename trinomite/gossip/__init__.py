"""Gossip membership: sans-IO wire format, failure detector and state machine.

Pure (no trio): ``wire``, ``detector``, ``rounds``, ``owners``, ``state``, ``events``,
``view``, ``seeds``; the node's shell (``node.membership``) owns the sockets
and the clock, feeds ``GossipState.receive``/``tick`` and sends what they
return.  ``providers`` is the one I/O module: the seed providers' HTTP and
DNS lookups.
"""

from .detector import FailureDetector as FailureDetector
from .detector import conviction_bounds as conviction_bounds
from .events import Counter as Counter
from .events import Event as Event
from .events import Joined as Joined
from .events import Member as Member
from .events import Outgoing as Outgoing
from .events import Removed as Removed
from .events import Replaced as Replaced
from .events import StateChanged as StateChanged
from .events import Step as Step
from .events import Updated as Updated
from .state import GossipState as GossipState
from .view import peer_infos as peer_infos
from .view import ring_records as ring_records
from .wire import GossipDecodeError as GossipDecodeError
from .wire import Kind as Kind
from .wire import Message as Message
from .wire import NodeRecord as NodeRecord
from .wire import Reason as Reason
from .wire import State as State
from .wire import decode as decode
