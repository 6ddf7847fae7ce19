"""NMR physics across time-scales (thesis chapter 5).

tensors    magres reading, σ/EFG conventions (Haeberlen, δ = σ_ref − σ, C_Q, η_Q)
averaging  fast regime: element-wise tensor average over MD samples (Eq. 5.10)
rates      harmonic TST (Vineyard prefactor from ASE vibrations) and Eyring (Eq. 3.2)
exchange   Markovian jump (stochastic Liouville) model between N sites, detailed-balance K
powder     orientation sets (ZCW, Lebedev); per-orientation site frequencies: static CSA and the
           17O central transition with second-order quadrupolar coupling under MAS
rotor      exchange under MAS at finite spinning speed: rotor-period propagation per orientation with
           its spinning sidebands (EXPRESS), and the criterion for the infinite-speed limit
spectra    the four panels of Fig. 5.1 (static, intermediate, fast, fast + intermediate)
"""
