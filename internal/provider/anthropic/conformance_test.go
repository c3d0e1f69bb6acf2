package anthropic_test

import (
	"testing"

	"polydev/internal/provider"
	"polydev/internal/provider/anthropic"
	"polydev/internal/provider/providertest"
)

func TestConformance(t *testing.T) {
	providertest.Run(t, provider.Anthropic, func(cfg provider.Config) provider.Provider { return anthropic.New(cfg) })
}
