package train

// LegacyFingerprint is the settings fingerprint the checkpoints of s had
// before runs chose their context length: with an unset one.
func LegacyFingerprint(s Spec) (string, error) {
	s, err := s.withDefaults()
	s.ContextLength = 0
	return s.fingerprint(), err
}
