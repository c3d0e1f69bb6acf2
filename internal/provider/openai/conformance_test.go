package openai_test

import (
	"testing"

	"polydev/internal/provider"
	"polydev/internal/provider/openai"
	"polydev/internal/provider/providertest"
)

func TestConformance(t *testing.T) {
	providertest.Run(t, provider.OpenAI, func(cfg provider.Config) provider.Provider { return openai.New(cfg) })
}
