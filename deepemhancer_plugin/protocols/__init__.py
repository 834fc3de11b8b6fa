from .protocol_enhance import ProtDeepEMhancer
from .protocol_fsc import ProtDeepEMhancerHalfMapFSC
from .protocol_mask import ProtDeepEMhancerMask
from .protocol_sharpen import ProtDeepEMhancerSharpen

__all__ = ["ProtDeepEMhancer", "ProtDeepEMhancerHalfMapFSC", "ProtDeepEMhancerMask", "ProtDeepEMhancerSharpen"]
