//! Generation-quality metrics of the LCM paper over decoded text and generated concepts:
//! REP-4, OVL-3 and coherence (issue 17 item 2).
