"""The IR-CM model: the SDE in closed form, the network, the consistency function, the sampler and the frame path."""
