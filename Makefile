# gitssh — the two commands a newcomer needs are `make dev` and `make test`.

SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec
.DEFAULT_GOAL := help

LOCALBIN ?= $(CURDIR)/bin
export PATH := $(LOCALBIN):$(PATH)

CONTROLLER_TOOLS_VERSION ?= v0.21.0
STATICCHECK_VERSION ?= v0.8.2
HELM_VERSION ?= v3.22.0
CONTROLLER_GEN ?= $(LOCALBIN)/controller-gen-$(CONTROLLER_TOOLS_VERSION)
STATICCHECK ?= $(LOCALBIN)/staticcheck-$(STATICCHECK_VERSION)
HELM ?= $(LOCALBIN)/helm-$(HELM_VERSION)

GO_TEST_FLAGS ?= -race -count=1
GO_TEST_TIMEOUT ?= 20m

##@ General

.PHONY: help
help: ## Show the targets.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make <target>\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  %-18s %s\n", $$1, $$2 } /^##@/ { printf "\n%s\n", substr($$0, 5) } ' $(MAKEFILE_LIST)

##@ Development

.PHONY: dev
dev: ## Run gitssh on a local control plane with a demo key and project (extra gitssh flags: DEV_ARGS="--flag=value ...").
	@go build -o $(LOCALBIN)/gitssh-dev ./hack/dev  # not 'go run': it exits 1 on Ctrl-C
	@KUBEBUILDER_ASSETS="$$(hack/setup-envtest.sh)" $(LOCALBIN)/gitssh-dev

.PHONY: manifests
manifests: $(CONTROLLER_GEN) ## Write the CRDs (config/crd/bases) and RBAC (config/rbac) from the Go markers.
	$(CONTROLLER_GEN) rbac:roleName=manager-role crd:allowDangerousTypes=false webhook paths="./api/...;./controllers/...;./internal/app/...;./internal/usage/..." \
		output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac
	@$(MAKE) --no-print-directory chart-crds

CHART_CRDS := charts/gitssh/templates/crds
.PHONY: chart-crds
chart-crds: ## Copy the CRDs and the manager Role's rules into the Helm chart (run by manifests).
	@rm -rf $(CHART_CRDS) && mkdir -p $(CHART_CRDS) charts/gitssh/files
	@for f in config/crd/bases/*.yaml; do \
		{ echo '{{- if .Values.crds.enabled }}'; \
		  echo "# Generated from $$f by 'make manifests'; do not edit."; \
		  sed -e '/^---$$/d' -e 's/^  annotations:$$/  annotations:\n    helm.sh\/resource-policy: keep/' $$f; \
		  echo '{{- end }}'; } > $(CHART_CRDS)/$$(basename $$f); \
	done
	@{ echo "# Generated from config/rbac/role.yaml by 'make manifests'; do not edit."; \
	  sed -n '/^rules:$$/,$$p' config/rbac/role.yaml; } > charts/gitssh/files/manager-role-rules.yaml

.PHONY: generate
generate: $(CONTROLLER_GEN) ## Write zz_generated.deepcopy.go.
	$(CONTROLLER_GEN) object:headerFile="hack/boilerplate.go.txt" paths="./api/...;./controllers/...;./internal/app/...;./internal/usage/..."

.PHONY: verify-generated
verify-generated: manifests generate ## Fail when generated files differ from what is committed.
	@if [ -n "$$(git status --porcelain -- api config charts)" ]; then \
		echo "Generated files are stale; run 'make manifests generate' and commit:"; \
		git status --porcelain -- api config charts; git --no-pager diff --stat -- api config charts; exit 1; \
	fi

.PHONY: fmt
fmt: ## Run gofmt on the tree.
	gofmt -l -w $$(git ls-files '*.go')

.PHONY: lint
lint: $(STATICCHECK) ## go vet + staticcheck + gofmt check.
	go vet ./...
	go vet -tags e2e ./test/e2e/
	$(STATICCHECK) ./...
	$(STATICCHECK) -tags e2e ./test/e2e/
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$unformatted" ]; then echo "Not gofmt'ed: $$unformatted"; exit 1; fi

##@ Test

.PHONY: envtest
envtest: ## Build kube-apiserver, etcd and kubectl into the user cache (once) and link bin/k8s.
	hack/setup-envtest.sh >/dev/null

.PHONY: test
test: envtest $(HELM) shipped-git ## Every test, unit and integration, against a real kube-apiserver + etcd, the git the image ships, and ssh.
	PATH="$(LOCALBIN)/git/bin:$$PATH" HELM=$(HELM) KUBEBUILDER_ASSETS="$$(hack/setup-envtest.sh)" go test $(GO_TEST_FLAGS) -timeout $(GO_TEST_TIMEOUT) ./...

.PHONY: shipped-git
shipped-git: ## Compile the git the image ships into the user cache (once) and link bin/git.
	hack/shipped-git.sh >/dev/null

##@ End-to-end (a real single-node Kubernetes in a network namespace; needs root)

.PHONY: image
image: ## Build the image from the Dockerfile (and a pause image) with podman, on a base made with debootstrap.
	hack/cluster/image.sh

.PHONY: cluster
cluster: image $(HELM) ## Start a single-node cluster, import the image, helm install the chart; prints KUBECONFIG=, NETNS=, SSH_ADDRESS=, KNOWN_HOSTS=.
	hack/cluster/up.sh

.PHONY: cluster-down
cluster-down: ## Remove the cluster started by 'make cluster' (or a killed run's leftovers).
	hack/cluster/down.sh

.PHONY: e2e
e2e: image $(HELM) ## 'make cluster', the tests in test/e2e against it (client inside the namespace), then teardown.
	HELM=$(HELM) hack/cluster/e2e.sh

.PHONY: e2e-run
e2e-run: $(HELM) ## The tests in test/e2e against the cluster 'make cluster' left up, which stays up (no image rebuild); E2E_ARGS='-test.run TestInstall'.
	HELM=$(HELM) E2E_ARGS='$(E2E_ARGS)' hack/cluster/e2e.sh --kept

.PHONY: print-helm
print-helm: $(HELM)
	@echo $(HELM)

##@ Build

.PHONY: helm-lint
helm-lint: $(HELM) ## Lint the Helm chart.
	$(HELM) lint --strict charts/gitssh

.PHONY: build
build: ## Build the gitssh binary, and the pack cache's hook that goes beside it, into bin/.
	CGO_ENABLED=0 go build -trimpath -o $(LOCALBIN)/gitssh .
	CGO_ENABLED=0 go build -trimpath -o $(LOCALBIN)/gitssh-pack-hook ./cmd/gitssh-pack-hook

.PHONY: git-source
git-source: ## Fetch the git release the image compiles into bin/git-source/ (once; checked against its SHA-256).
	hack/git-source.sh

##@ Tools

$(LOCALBIN):
	mkdir -p $(LOCALBIN)

$(CONTROLLER_GEN): | $(LOCALBIN)
	GOBIN=$(LOCALBIN) go install sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_TOOLS_VERSION)
	mv $(LOCALBIN)/controller-gen $@

$(STATICCHECK): | $(LOCALBIN)
	GOBIN=$(LOCALBIN) go install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	mv $(LOCALBIN)/staticcheck $@

$(HELM): | $(LOCALBIN)
	GOBIN=$(LOCALBIN) go install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)
	mv $(LOCALBIN)/helm $@
