from services.profile.main import main

main()
