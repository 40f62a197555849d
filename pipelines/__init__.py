"""Runnable Beam jobs: thin launchers over the beam_etl library."""
