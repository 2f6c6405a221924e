"""Time series with SSMs: hierarchical SSMs (HiSS), an inertial-odometry generator, forecasting and
irregularly sampled sequences. See docs/timeseries.md."""
