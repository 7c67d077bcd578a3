"""Pictures of a trajectory file: the figures (``figures``: ``plot`` and the shared figure helpers)
and the animation (``movie``). They read files; they never run the simulator."""
