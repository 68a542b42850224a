"""Human in the loop: intervention arbitration, episode recording, demo/intervention buffers."""
