"""Camera paths (orbit, spiral, keyframe splines, nerfstudio camera-path files) and video
rendering of a :class:`switchnerf.render.Renderer` along them."""
