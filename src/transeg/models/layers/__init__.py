"""Blocks shared by the encoders and decoders. Imports no encoder or decoder."""
