package google_test

import (
	"testing"

	"polydev/internal/provider"
	"polydev/internal/provider/google"
	"polydev/internal/provider/providertest"
)

func TestConformance(t *testing.T) {
	providertest.Run(t, provider.Google, func(cfg provider.Config) provider.Provider { return google.New(cfg) })
}
