"""Physical and time constants shared by the package (one definition each)."""

#: Speed of light (m/s).
C_M_S = 299792458.0
#: Standard deviation of a normal distribution per median absolute deviation: 1 / Phi^-1(3/4).
MAD_TO_SIGMA = 1.482602218505602
#: Seconds in a day (UTC days; leap seconds do not matter at these precisions).
SECONDS_PER_DAY = 86400.0
#: Julian date of MJD 0 (JD = MJD + 2400000.5); CASA's TIME column is MJD seconds.
MJD_ZERO_JD = 2400000.5
#: MJD of the Unix epoch 1970-01-01T00:00:00 UTC.
MJD_UNIX_EPOCH = 40587.0
