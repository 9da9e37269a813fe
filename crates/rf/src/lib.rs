//! RF anomaly detection: FM I/Q generator, SigMF files, windowing and the online detector.
