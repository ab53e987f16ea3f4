"""Radar data: simulator, recorded-data readers, the shared spectrogram pipeline and the datamodule."""
